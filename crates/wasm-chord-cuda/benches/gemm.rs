//! Prompt matmul (many tokens): the tensor-core path (dequantize to f16 + cuBLAS) against the
//! 8-token kernel, at 7B Llama's per-layer shapes, and the matmul time of a 7B Q4_K_M pp512.
//!
//! `cargo bench -p wasm-chord-cuda --bench gemm`. Each measurement rotates several weight
//! buffers so weights come from device memory, and is the median of 5 regions of 5 calls.

use std::error::Error;

use cudarc::driver::sys::CUevent_flags;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::{Backend, SharedBytes, WeightData};
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cuda::{ops, CudaBackend, CudaWeight, Layout};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time(g: &CudaBackend, mut f: impl FnMut(usize) -> Result<(), Box<dyn Error>>) -> Result<f64, Box<dyn Error>> {
    let (ctx, stream) = (g.device().context(), g.device().stream());
    for i in 0..2 {
        f(i)?;
    }
    let mut samples = Vec::new();
    for _ in 0..5 {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        start.record(stream)?;
        for i in 0..5 {
            f(i)?;
        }
        end.record(stream)?;
        samples.push(start.elapsed_ms(&end)? as f64 / 1e3 / 5.0);
    }
    Ok(median(samples))
}

fn weights(g: &CudaBackend, r: &mut ChaCha8Rng, ty: TensorType, rows: usize, cols: usize) -> Result<Vec<CudaWeight>, Box<dyn Error>> {
    let row_bytes = ty.row_bytes(cols)?;
    let tile_rows = 64.min(rows);
    let vals: Vec<f32> = (0..tile_rows * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
    let mut tile = vec![0u8; tile_rows * row_bytes];
    quant::quantize(ty, &vals, &mut tile)?;
    let bytes: Vec<u8> = tile.iter().copied().cycle().take(rows * row_bytes).collect();
    let first = g.load_weight(WeightData { ty, rows, cols, bytes: SharedBytes::from_vec(bytes) })?;
    let mut all = Vec::new();
    for _ in 1..4 {
        all.push(CudaWeight { ty, rows, cols, row_stride: first.row_stride, layout: first.layout, bytes: g.device().stream().clone_dtod(&first.bytes)?, values: None });
    }
    all.push(first);
    Ok(all)
}

fn main() -> Result<(), Box<dyn Error>> {
    let g = CudaBackend::new(0)?;
    println!("device: {} ({})", g.device().name(), g.device().arch());
    let mut r = ChaCha8Rng::seed_from_u64(2);
    let shapes = [(4096usize, 4096usize), (11008, 4096), (4096, 11008)];
    let types = [TensorType::Q4_K, TensorType::Q6_K, TensorType::Q4_0, TensorType::Q8_0, TensorType::F16];
    // us per matmul of 512 tokens by (shape, type), for the pp512 estimate.
    let mut t512 = std::collections::HashMap::new();
    println!("{:>12} {:>6} {:>6} {:>10} {:>9} {:>12}", "shape", "type", "tokens", "gemm us", "TFLOP/s", "matmul8 us");
    for (rows, cols) in shapes {
        for ty in types {
            let ws = weights(&g, &mut r, ty, rows, cols)?;
            for n_tok in [9usize, 16, 64, 128, 512] {
                let x: Vec<f32> = (0..n_tok * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
                let gx = g.upload(&x, n_tok, cols)?;
                let mut out = g.tensor(n_tok, rows)?;
                let tg = time(&g, |i| Ok(g.matmul(&ws[i % ws.len()], None, &gx, &mut out)?))?;
                // matvec.cu reads only the file layout (`-` for a repacked weight).
                let t8 = if n_tok <= 128 && ws[0].layout == Layout::File {
                    time(&g, |i| Ok(ops::matvec::matmul(g.device(), &ws[i % ws.len()], None, &gx, &mut out)?))?
                } else {
                    f64::NAN
                };
                let tflops = 2.0 * (rows * cols * n_tok) as f64 / tg / 1e12;
                println!("{:>12} {:>6} {:>6} {:>10.1} {:>9.1} {:>12.1}", format!("{rows}x{cols}"), ty.name(), n_tok, tg * 1e6, tflops, t8 * 1e6);
                if n_tok == 512 {
                    t512.insert((rows, cols, ty), tg);
                }
            }
        }
    }
    // 7B Llama Q4_K_M, per layer: q, k, o and gate, up in Q4_K; v and down in Q6_K (llama.cpp
    // gives Q6_K to v and down in about half the layers, so this is an upper bound); 32 layers;
    // the output matrix is a single-token matvec in a prompt (only the last logits are needed).
    let (q4, q6) = (TensorType::Q4_K, TensorType::Q6_K);
    let layer = 3.0 * t512[&(4096, 4096, q4)] + t512[&(4096, 4096, q6)] + 2.0 * t512[&(11008, 4096, q4)] + t512[&(4096, 11008, q6)];
    let total = 32.0 * layer;
    println!(
        "\n7B Q4_K_M pp512, matmuls only: {:.1} ms per 512 tokens = {:.0} tok/s (llama.cpp H100 pp512, whole model: 10246 tok/s)",
        total * 1e3,
        512.0 / total
    );
    Ok(())
}
