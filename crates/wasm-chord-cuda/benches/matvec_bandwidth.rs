//! Decode matvec bandwidth per weight type, against a device-to-device copy.
//!
//! `cargo bench -p wasm-chord-cuda --bench matvec_bandwidth [-- [ROWSxCOLS ...] [--types a,b]
//! [--variants]]`. Default shapes: 16384x4096 and 7B Llama's per-layer 4096x4096, 11008x4096,
//! 4096x11008 and its 32000x4096 output. Several weight buffers (together > 256 MiB, far past
//! L2) are used in turn so every launch reads its weights from device memory. Each timed region
//! is queued behind a 512 MiB copy, so launches wait on the GPU, not the host: small matrices
//! are timed as back-to-back kernels (what a CUDA graph of the decode step would run).
//! GB/s counts the weight bytes a launch must read. `--variants` also times other
//! configurations of the same kernel template (`ops::matvec::VARIANTS`, compiled here from
//! matvec.cuh), one column per variant, each checked against the shipped kernel's output ("!":
//! they differ by more than 1e-5 of the largest output).
//! `--precompile ARCH` fills the kernel cache for ARCH without a GPU.
//!
//! Per type: the f32-activation kernel (matvec.cu, `CudaOptions::f32_matvec`) and the int8 one
//! (mmvq.cu) in the same run: `int8` is the backend's matmul (the activation quantization
//! launch included), `kern` the int8 kernel alone on activations quantized once, `gate` the
//! fused gate+up+SiLU kernel over two such weights (compare with 2 x `int8`); the `q_*`
//! columns (with `--variants`) are other int8 configurations (`ops::mmvq::VARIANTS`), checked
//! against the shipped int8 kernel; a row per other decoding of the type's file layout
//! (`ops::mmvq::CANDIDATE_DECODES`) gives the same columns for it.

use std::error::Error;
use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaFunction, CudaSlice};
use cudarc::nvrtc::Ptx;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::{Activation, Backend, SharedBytes, WeightData};
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cuda::kernels::KernelFile;
use wasm_chord_cuda::{nvrtc, ops, CudaBackend, CudaWeight, Layout};

/// Launches per timed region, and timed regions per measurement (the median is reported).
const LAUNCHES: usize = 20;
const REPEATS: usize = 7;

/// The variant modules: (module name, whether built with the biased decoding).
const MODULES: [(&str, bool); 2] = [("matvec_variants", false), ("matvec_variants_b", true)];

fn mmvq_variant_file() -> KernelFile {
    KernelFile { name: "mmvq_variants", source: Box::leak(ops::mmvq::variant_source().into_boxed_str()) }
}

fn variant_file(name: &'static str, biased: bool) -> KernelFile {
    KernelFile { name, source: Box::leak(ops::matvec::variant_source(biased).into_boxed_str()) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

struct Timer {
    g: Arc<CudaBackend>,
    /// Queued before each timed region so that the launches after it wait on the GPU.
    pad_src: CudaSlice<u8>,
    pad_dst: CudaSlice<u8>,
}

impl Timer {
    /// Median seconds per call of `f(i)` over `REPEATS` regions of `LAUNCHES` calls.
    fn time(&mut self, mut f: impl FnMut(usize) -> Result<(), Box<dyn Error>>) -> Result<f64, Box<dyn Error>> {
        let ctx = self.g.device().context().clone();
        let stream = self.g.device().stream().clone();
        for i in 0..3 {
            f(i)?;
        }
        let mut samples = Vec::new();
        for _ in 0..REPEATS {
            let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            stream.memcpy_dtod(&self.pad_src, &mut self.pad_dst)?;
            start.record(&stream)?;
            for i in 0..LAUNCHES {
                f(i)?;
            }
            end.record(&stream)?;
            samples.push(start.elapsed_ms(&end)? as f64 / 1e3 / LAUNCHES as f64);
        }
        Ok(median(samples))
    }
}

fn parse_shape(s: &str) -> Option<(usize, usize)> {
    let (r, c) = s.split_once('x')?;
    Some((r.parse().ok()?, c.parse().ok()?))
}

/// `n_buf` device copies of one random matrix of type `ty` (quantized from a 64-row tile) in
/// each layout of `layouts`.
fn weights(g: &CudaBackend, r: &mut ChaCha8Rng, ty: TensorType, rows: usize, cols: usize, layouts: &[Layout]) -> Result<Vec<Vec<CudaWeight>>, Box<dyn Error>> {
    let row_bytes = ty.row_bytes(cols)?;
    let tile_rows = 64.min(rows);
    let vals: Vec<f32> = (0..tile_rows * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
    let mut tile = vec![0u8; tile_rows * row_bytes];
    quant::quantize(ty, &vals, &mut tile)?;
    let bytes = SharedBytes::from_vec(tile.iter().copied().cycle().take(rows * row_bytes).collect());
    let n_buf = (256usize << 20).div_ceil(rows * row_bytes).clamp(2, 8);
    let stream = g.device().stream();
    let mut sets = Vec::new();
    for &layout in layouts {
        let first = g.load_weight_in(WeightData { ty, rows, cols, bytes: bytes.clone() }, layout)?;
        let mut all = Vec::new();
        for _ in 1..n_buf {
            all.push(CudaWeight { ty, rows, cols, row_stride: first.row_stride, layout, bytes: stream.clone_dtod(&first.bytes)?, values: None });
        }
        all.push(first);
        sets.push(all);
    }
    Ok(sets)
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut shapes: Vec<(usize, usize)> = args.iter().filter_map(|a| parse_shape(a)).collect();
    if shapes.is_empty() {
        shapes = vec![(16384, 4096), (4096, 4096), (11008, 4096), (4096, 11008), (32000, 4096)];
    }
    let only: Option<Vec<String>> = args.iter().position(|a| a == "--types").and_then(|i| args.get(i + 1)).map(|s| s.split(',').map(String::from).collect());
    let with_variants = args.iter().any(|a| a == "--variants");
    let types: Vec<TensorType> = TensorType::WEIGHTS.into_iter().filter(|t| only.as_ref().is_none_or(|o| o.iter().any(|n| n == t.name()))).collect();

    // `--precompile ARCH`: fill the kernel cache for ARCH (no GPU needed) and stop, so a device
    // run starts without compiling.
    if let Some(arch) = args.iter().position(|a| a == "--precompile").and_then(|i| args.get(i + 1)) {
        for file in wasm_chord_cuda::kernels::all() {
            nvrtc::compile(&file, arch)?;
        }
        for (name, biased) in MODULES {
            nvrtc::compile(&variant_file(name, biased), arch)?;
        }
        nvrtc::compile(&mmvq_variant_file(), arch)?;
        return Ok(());
    }
    let g = Arc::new(CudaBackend::new(0)?);
    let dev = g.device();
    println!("device: {} ({})", dev.name(), dev.arch());
    let stream = dev.stream().clone();
    let mut timer = Timer { g: g.clone(), pad_src: stream.alloc_zeros::<u8>(512 << 20)?, pad_dst: stream.alloc_zeros::<u8>(512 << 20)? };

    // Device-to-device copy of 1 GiB: bytes read plus bytes written.
    let n = 1usize << 28;
    let src = stream.alloc_zeros::<f32>(n)?;
    let mut dst = stream.alloc_zeros::<f32>(n)?;
    let t = timer.time(|_| Ok(stream.memcpy_dtod(&src, &mut dst)?))?;
    let copy_gbs = 2.0 * 4.0 * n as f64 / t / 1e9;
    println!("device-to-device copy: {copy_gbs:.0} GB/s (read + write)");
    drop((src, dst));

    let mut variants: Vec<(ops::matvec::Variant, Arc<cudarc::driver::CudaModule>)> = Vec::new();
    if with_variants {
        for (name, biased) in MODULES {
            let cubin = nvrtc::compile(&variant_file(name, biased), dev.arch())?;
            let module = dev.context().load_module(Ptx::from_binary(cubin))?;
            variants.extend(ops::matvec::VARIANTS.iter().filter(|v| v.biased == biased).map(|v| (*v, module.clone())));
        }
    }
    let mmvq_variants = if with_variants { Some(dev.context().load_module(Ptx::from_binary(nvrtc::compile(&mmvq_variant_file(), dev.arch())?))?) } else { None };

    let mut r = ChaCha8Rng::seed_from_u64(1);
    for (rows, cols) in shapes {
        let x: Vec<f32> = (0..cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
        let x8: Vec<f32> = (0..8 * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
        let gx = g.upload(&x, 1, cols)?;
        let gx8 = g.upload(&x8, 8, cols)?;
        let mut out = g.tensor(1, rows)?;
        let mut out8 = g.tensor(8, rows)?;
        let (mut scratch, mut scratch8) = (g.tensor(1, ops::mmvq::scratch_len(1, cols))?, g.tensor(1, ops::mmvq::scratch_len(8, cols))?);
        println!("\nmatrix {rows} x {cols}: one token, f32-activation kernel (f32) and int8 (int8: with the quantize launch; kern: alone); 8 tokens; gate: fused gate+up over two weights");
        print!(
            "{:>7} {:>7} {:>7} {:>5} {:>7} {:>5} {:>7} {:>5} {:>7} {:>5} {:>8} {:>8} {:>7}",
            "type", "MiB", "f32 us", "%copy", "int8 us", "%copy", "kern us", "%copy", "old us", "%copy", "8t f32", "8t int8", "gate us"
        );
        for (v, _) in &variants {
            print!(" {:>8}", v.name);
        }
        if mmvq_variants.is_some() {
            for v in ops::mmvq::VARIANTS {
                print!(" {:>8}", v.name);
            }
        }
        println!();
        for &ty in &types {
            // ws: the backend's layout (the int8 columns); wf: the file layout (the f32 columns
            // and `old`, the int8 kernel on the file layout, where the backend repacks).
            let repacked = Layout::preferred(ty) != Layout::File;
            let layouts: &[Layout] = if repacked { &[Layout::preferred(ty), Layout::File] } else { &[Layout::File] };
            let sets = weights(&g, &mut r, ty, rows, cols, layouts)?;
            let (ws, wf) = (&sets[0], &sets[sets.len() - 1]);
            let nb = ws.len();
            let total = rows * ty.row_bytes(cols)?;
            let pct = |t: f64| 100.0 * total as f64 / t / 1e9 / copy_gbs;
            let t1 = timer.time(|i| Ok(ops::matvec::matmul(dev, &wf[i % nb], None, &gx, &mut out)?))?;
            let int8 = ops::mmvq::supports(ty);
            // The quantize launch and the kernel, as a matmul whose activations no earlier
            // matmul quantized (the backend reuses them across matmuls of one tensor).
            let t1q = if int8 {
                timer.time(|i| {
                    let xq = ops::mmvq::quantize(dev, &gx, &mut scratch)?;
                    Ok(ops::mmvq::matmul(dev, &ws[i % nb], None, &xq, &mut out, false)?)
                })?
            } else {
                timer.time(|i| Ok(g.matmul(&ws[i % nb], None, &gx, &mut out)?))?
            };
            let xq = ops::mmvq::quantize(dev, &gx, &mut scratch)?;
            let tk = if int8 { timer.time(|i| Ok(ops::mmvq::matmul(dev, &ws[i % nb], None, &xq, &mut out, false)?))? } else { f64::NAN };
            let told = if int8 && repacked { timer.time(|i| Ok(ops::mmvq::matmul(dev, &wf[i % nb], None, &xq, &mut out, false)?))? } else { tk };
            let t8 = timer.time(|i| Ok(ops::matvec::matmul(dev, &wf[i % nb], None, &gx8, &mut out8)?))?;
            let t8q = if int8 {
                timer.time(|i| {
                    let xq = ops::mmvq::quantize(dev, &gx8, &mut scratch8)?;
                    Ok(ops::mmvq::matmul(dev, &ws[i % nb], None, &xq, &mut out8, false)?)
                })?
            } else {
                timer.time(|i| Ok(g.matmul(&ws[i % nb], None, &gx8, &mut out8)?))?
            };
            let tg = if int8 {
                timer.time(|i| {
                    let xq = ops::mmvq::quantize(dev, &gx, &mut scratch)?;
                    Ok(ops::mmvq::matmul_gated(dev, Activation::Silu, &ws[i % nb], &ws[(i + 1) % nb], &xq, &mut out)?)
                })?
            } else {
                f64::NAN
            };
            print!(
                "{:>7} {:>7.1} {:>7.2} {:>4.0}% {:>7.2} {:>4.0}% {:>7.2} {:>4.0}% {:>7.2} {:>4.0}% {:>8.1} {:>8.1} {:>7.2}",
                ty.name(),
                total as f64 / (1 << 20) as f64,
                t1 * 1e6,
                pct(t1),
                t1q * 1e6,
                pct(t1q),
                tk * 1e6,
                pct(tk),
                told * 1e6,
                pct(told),
                t8 * 1e6,
                t8q * 1e6,
                tg * 1e6
            );
            // Each variant's output (last launch: buffer LAUNCHES - 1) against the shipped kernel's
            // on the same buffer; "!" marks a normalized difference over 1e-5.
            let (last, last_file) = (&ws[(LAUNCHES - 1) % nb], &wf[(LAUNCHES - 1) % nb]);
            let (mut want1, mut want8, mut want_q) = (Vec::new(), Vec::new(), Vec::new());
            ops::matvec::matmul(dev, last_file, None, &gx, &mut out)?;
            g.download(&out, &mut want1)?;
            ops::matvec::matmul(dev, last_file, None, &gx8, &mut out8)?;
            g.download(&out8, &mut want8)?;
            g.matmul(last, None, &gx, &mut out)?;
            g.download(&out, &mut want_q)?;
            let mark = |o: &wasm_chord_cuda::CudaTensor, want: &[f32]| -> Result<&'static str, Box<dyn Error>> {
                let mut got = Vec::new();
                g.download(o, &mut got)?;
                let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
                let diff = got.iter().zip(want.iter()).map(|(a, b)| (a - b).abs() / scale).fold(0.0f32, |m, e| if e.is_nan() { f32::INFINITY } else { m.max(e) });
                Ok(if diff > 1e-5 { "!" } else { " " })
            };
            for (v, module) in &variants {
                let f: CudaFunction = module.load_function(&format!("{}_{}", v.name, ty.name()))?;
                let (x, o, want) = if v.tokens == 1 { (&gx, &mut out, &want1) } else { (&gx8, &mut out8, &want8) };
                let t = if v.stream {
                    timer.time(|i| Ok(ops::matvec::launch_stream(dev, &f, v, &wf[i % nb], x, o)?))?
                } else {
                    timer.time(|i| Ok(ops::matvec::launch(dev, &f, (v.warps, v.rows), v.tokens, 0, &wf[i % nb], None, x, o)?))?
                };
                print!(" {:>7.2}{}", t * 1e6, mark(o, want)?);
            }
            if let Some(module) = &mmvq_variants {
                for v in ops::mmvq::VARIANTS {
                    if !int8 {
                        print!(" {:>8}", "-");
                        continue;
                    }
                    let f: CudaFunction = module.load_function(&format!("{}_{}", v.name, ws[0].layout.kernel_type(ty)))?;
                    let t = timer.time(|i| Ok(ops::mmvq::launch(dev, &f, (v.warps, v.rows), 1, &ws[i % nb], None, &xq, &mut out, false)?))?;
                    print!(" {:>7.2}{}", t * 1e6, mark(&out, &want_q)?);
                }
            }
            println!();
            // Other decodings of the file layout: one row of the same candidate columns each,
            // on the file-layout weights, checked against the shipped kernel.
            if let Some(module) = mmvq_variants.as_ref().filter(|_| int8) {
                for (name, _) in ops::mmvq::CANDIDATE_DECODES.iter().filter(|(_, t)| *t == ty) {
                    print!("{:>7} {:>7.1} {:>81}", name, total as f64 / (1 << 20) as f64, "");
                    for _ in &variants {
                        print!(" {:>8}", "-");
                    }
                    for v in ops::mmvq::VARIANTS {
                        let f: CudaFunction = module.load_function(&format!("{}_{name}", v.name))?;
                        let t = timer.time(|i| Ok(ops::mmvq::launch(dev, &f, (v.warps, v.rows), 1, &wf[i % nb], None, &xq, &mut out, false)?))?;
                        print!(" {:>7.2}{}", t * 1e6, mark(&out, &want_q)?);
                    }
                    println!();
                }
            }
        }
    }
    Ok(())
}
