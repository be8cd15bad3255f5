//! Flash attention throughput: the prefill kernel (causal, 32 heads x 128, seq 2k/8k/32k) in
//! TFLOP/s, and decode (one query over 8k/32k keys, f16 and q8_0 caches) in GB/s of K+V read
//! against a device-to-device copy. `cargo bench -p wasm-chord-cuda --bench flash_bench`;
//! scripts/device/flash-bench.sh runs it beside PyTorch's scaled_dot_product_attention.

use std::error::Error;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use wasm_chord_core::backend::{AttentionKind, AttentionParams, Backend, KvType};
use wasm_chord_cuda::ops::flash::{self, FlashOptions, FlashWorkspace, KvData, KvView};
use wasm_chord_cuda::{CudaBackend, CudaOptions};

const REPEATS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds per call of `f` over `REPEATS` regions of `launches` calls, after a warm-up.
fn time(g: &CudaBackend, launches: usize, mut f: impl FnMut() -> Result<(), Box<dyn Error>>) -> Result<f64, Box<dyn Error>> {
    let ctx = g.device().context();
    let stream = g.device().stream();
    for _ in 0..2 {
        f()?;
    }
    let mut samples = Vec::new();
    for _ in 0..REPEATS {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        start.record(stream)?;
        for _ in 0..launches {
            f()?;
        }
        end.record(stream)?;
        samples.push(start.elapsed_ms(&end)? as f64 / 1e3 / launches as f64);
    }
    Ok(median(samples))
}

/// Cheap reproducible uniform values in [-1, 1) (xorshift), so 32k-token inputs take no time.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    fn f32s(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.next()).collect()
    }
}

fn view(x: &(CudaSlice<u16>, Option<CudaSlice<i8>>), cols: usize, capacity: usize) -> KvView<'_> {
    let data = match &x.1 {
        Some(qs) => KvData::Q8_0 { qs, d: &x.0 },
        None => KvData::F16(&x.0),
    };
    KvView { data, cols, capacity }
}

fn main() -> Result<(), Box<dyn Error>> {
    let g = CudaBackend::new(0)?;
    let s = g.device().stream().clone();
    println!("device: {} ({}), {} SMs", g.device().name(), g.device().arch(), g.device().sm_count());
    let mut noise = Noise(0x9E3779B97F4A7C15);

    // Device-to-device copy of 1 GiB: bytes read plus bytes written.
    let n = 1usize << 28;
    let src = s.alloc_zeros::<f32>(n)?;
    let mut dst = s.alloc_zeros::<f32>(n)?;
    let t = time(&g, 5, || Ok(s.memcpy_dtod(&src, &mut dst)?))?;
    let copy_gbs = 2.0 * 4.0 * n as f64 / t / 1e9;
    println!("copy: {copy_gbs:.0} GB/s (read + write)");
    drop((src, dst));

    let ws = FlashWorkspace::default();
    let (heads, d) = (32usize, 128usize);
    let cols = heads * d;
    println!("\nprefill, causal, {heads} heads x {d}, q f32 -> 16-bit, out f32");
    for seq in [2048usize, 8192, 32768] {
        let q = s.clone_htod(&noise.f32s(seq * cols))?;
        let kf = noise.f32s(seq * cols);
        let vf = noise.f32s(seq * cols);
        let mut out = s.alloc_zeros::<f32>(seq * cols)?;
        let p = AttentionParams { n_head: heads, n_head_kv: heads, head_dim_k: d, head_dim_v: d, scale: 1.0 / (d as f32).sqrt(), softcap: None, q_pos0: 0, window: None };
        let flops = 4.0 * (seq * seq) as f64 * (heads * d) as f64 / 2.0;
        let launches = if seq >= 32768 { 2 } else { 10 };
        let variants = [
            ("bf16 fast 4w x 32 rows", true, true, true),
            ("bf16 fast 8w x 16 rows", true, true, false),
            ("bf16 hi+lo 8w x 16 rows", true, false, false),
            ("f16 4w x 32 rows", false, false, true),
            ("f16 8w x 16 rows", false, false, false),
        ];
        for (label, bf, fast, w4) in variants {
            let bits = |x: &[f32]| -> Vec<u16> {
                if bf {
                    x.iter().map(|&v| bf16::from_f32(v).to_bits()).collect()
                } else {
                    x.iter().map(|&v| f16::from_f32(v).to_bits()).collect()
                }
            };
            let (k, v): (CudaSlice<u16>, CudaSlice<u16>) = (s.clone_htod(&bits(&kf))?, s.clone_htod(&bits(&vf))?);
            let data = |x| if bf { KvData::Bf16(x) } else { KvData::F16(x) };
            let (kv, vv) = (KvView { data: data(&k), cols, capacity: seq }, KvView { data: data(&v), cols, capacity: seq });
            let opts = FlashOptions { fast_bf16: fast, prefill_w4: Some(w4) };
            let t = time(&g, launches, || Ok(flash::flash_attention(g.device(), &ws, &q, seq, &kv, &vv, seq, &p, opts, &mut out)?))?;
            println!("RESULT prefill seq {seq:>5} {label:<24} {:>8.3} ms {:>6.1} TFLOP/s", t * 1e3, flops / t / 1e12);
        }
    }

    println!("\ndecode: 1 query token, K+V bytes read per call vs the copy's {copy_gbs:.0} GB/s");
    for (n_kv, kv_len) in [(32usize, 8192usize), (32, 32768), (8, 32768)] {
        let kv_cols = n_kv * d;
        let p = AttentionParams { n_head: heads, n_head_kv: n_kv, head_dim_k: d, head_dim_v: d, scale: 1.0 / (d as f32).sqrt(), softcap: None, q_pos0: kv_len - 1, window: None };
        let q = s.clone_htod(&noise.f32s(cols))?;
        let mut out = s.alloc_zeros::<f32>(cols)?;
        for kv_type in KvType::ALL {
            let n = kv_len * kv_cols;
            let (k, v, bytes);
            match kv_type {
                KvType::F16 => {
                    let mk = |noise: &mut Noise| -> Vec<u16> { (0..n).map(|_| f16::from_f32(noise.next()).to_bits()).collect() };
                    k = (s.clone_htod(&mk(&mut noise))?, None);
                    v = (s.clone_htod(&mk(&mut noise))?, None);
                    bytes = 2.0 * n as f64 * 2.0;
                }
                KvType::Q8_0 => {
                    let mk = |noise: &mut Noise| -> Result<(CudaSlice<u16>, Option<CudaSlice<i8>>), Box<dyn Error>> {
                        let qs: Vec<i8> = (0..n).map(|_| (noise.next() * 127.0) as i8).collect();
                        let d: Vec<u16> = (0..n / 32).map(|_| f16::from_f32(0.01 + noise.next().abs() * 0.01).to_bits()).collect();
                        Ok((s.clone_htod(&d)?, Some(s.clone_htod(&qs)?)))
                    };
                    k = mk(&mut noise)?;
                    v = mk(&mut noise)?;
                    bytes = 2.0 * n as f64 * 34.0 / 32.0;
                }
            }
            let (kv, vv) = (view(&k, kv_cols, kv_len), view(&v, kv_cols, kv_len));
            let t = time(&g, 20, || Ok(flash::flash_attention(g.device(), &ws, &q, 1, &kv, &vv, kv_len, &p, FlashOptions::default(), &mut out)?))?;
            let gbs = bytes / t / 1e9;
            println!(
                "RESULT decode kv {kv_len:>5} heads {heads}/{n_kv:<2} {:<4} {:>8.1} us {:>7.0} GB/s {:>4.0}% of copy",
                kv_type.name(),
                t * 1e6,
                gbs,
                100.0 * gbs / copy_gbs
            );
        }
    }

    // The standard kernel (one block per query row and head) at decode, for contrast.
    let std_g = CudaBackend::with_options(0, CudaOptions { attention: AttentionKind::Standard, kv_type: KvType::F16, ..CudaOptions::default() })?;
    let kv_len = 8192;
    let mut kc = std_g.cache(kv_len, cols)?;
    let mut vc = std_g.cache(kv_len, cols)?;
    for _ in 0..2 {
        let x = std_g.upload(&noise.f32s(kv_len * cols), kv_len, cols)?;
        std_g.store_kv(&mut kc, 0, &x)?;
        std::mem::swap(&mut kc, &mut vc);
    }
    let q = std_g.upload(&noise.f32s(cols), 1, cols)?;
    let mut out = std_g.tensor(1, cols)?;
    let p = AttentionParams { n_head: heads, n_head_kv: heads, head_dim_k: d, head_dim_v: d, scale: 0.088, softcap: None, q_pos0: kv_len - 1, window: None };
    let t = time(&std_g, 20, || Ok(std_g.attention(&q, &kc, &vc, kv_len, &p, &mut out)?))?;
    let gbs = 2.0 * (kv_len * cols) as f64 * 2.0 / t / 1e9;
    println!("RESULT decode kv {kv_len:>5} heads {heads}/{heads} f16 standard kernel {:>8.1} us {gbs:>7.0} GB/s", t * 1e6);
    Ok(())
}
