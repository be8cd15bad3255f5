//! Decode matvec bandwidth per weight type on a large matrix, against a device-to-device copy.
//!
//! `cargo bench -p wasm-chord-cuda --bench matvec_bandwidth [-- ROWS COLS]` (default 16384 x
//! 4096). Several weight buffers (together > 256 MiB, far past L2) are used in turn so every
//! launch reads its weights from device memory. GB/s counts the weight bytes a launch must read.

use std::error::Error;

use cudarc::driver::sys::CUevent_flags;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::backend::{Backend, SharedBytes, WeightData};
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cuda::CudaBackend;

const TYPES: [TensorType; 15] = TensorType::WEIGHTS;

/// Launches per timed region, and timed regions per measurement (the median is reported).
const LAUNCHES: usize = 20;
const REPEATS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds per call of `f(i)` over `REPEATS` regions of `LAUNCHES` calls.
fn time(g: &CudaBackend, mut f: impl FnMut(usize) -> Result<(), Box<dyn Error>>) -> Result<f64, Box<dyn Error>> {
    let ctx = g.device().context();
    let stream = g.device().stream();
    for i in 0..3 {
        f(i)?;
    }
    let mut samples = Vec::new();
    for _ in 0..REPEATS {
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        start.record(stream)?;
        for i in 0..LAUNCHES {
            f(i)?;
        }
        end.record(stream)?;
        samples.push(start.elapsed_ms(&end)? as f64 / 1e3 / LAUNCHES as f64);
    }
    Ok(median(samples))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let (rows, cols) = (args.first().copied().unwrap_or(16384), args.get(1).copied().unwrap_or(4096));
    let g = CudaBackend::new(0)?;
    println!("device: {} ({}), matrix {rows} x {cols}", g.device().name(), g.device().arch());

    // Device-to-device copy of 1 GiB: bytes read plus bytes written.
    let n = 1usize << 28;
    let stream = g.device().stream().clone();
    let src = stream.alloc_zeros::<f32>(n)?;
    let mut dst = stream.alloc_zeros::<f32>(n)?;
    let t = time(&g, |_| Ok(stream.memcpy_dtod(&src, &mut dst)?))?;
    let copy_gbs = 2.0 * 4.0 * n as f64 / t / 1e9;
    println!("device-to-device copy: {copy_gbs:.0} GB/s (read + write)");
    drop((src, dst));

    let mut r = ChaCha8Rng::seed_from_u64(1);
    let x: Vec<f32> = (0..cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
    let x8: Vec<f32> = (0..8 * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
    let gx = g.upload(&x, 1, cols)?;
    let gx8 = g.upload(&x8, 8, cols)?;
    let mut out = g.tensor(1, rows)?;
    let mut out8 = g.tensor(8, rows)?;
    println!("{:>7} {:>9} {:>9} {:>8} {:>7} {:>13}", "type", "MiB", "us", "GB/s", "%copy", "8-tok us");
    for ty in TYPES {
        let row_bytes = ty.row_bytes(cols)?;
        // A 64-row tile of random quantized rows, repeated: quantizing the whole matrix on the
        // host would take longer than the measurement.
        let tile_rows = 64.min(rows);
        let vals: Vec<f32> = (0..tile_rows * cols).map(|_| r.gen::<f32>() * 2.0 - 1.0).collect();
        let mut tile = vec![0u8; tile_rows * row_bytes];
        quant::quantize(ty, &vals, &mut tile)?;
        let bytes: Vec<u8> = tile.iter().copied().cycle().take(rows * row_bytes).collect();
        let total = rows * row_bytes;
        let n_buf = (256usize << 20).div_ceil(total).clamp(2, 8);
        let weights = (0..n_buf)
            .map(|_| g.load_weight(WeightData { ty, rows, cols, bytes: SharedBytes::from_vec(bytes.clone()) }))
            .collect::<Result<Vec<_>, _>>()?;
        let t1 = time(&g, |i| Ok(g.matmul(&weights[i % n_buf], None, &gx, &mut out)?))?;
        let t8 = time(&g, |i| Ok(g.matmul(&weights[i % n_buf], None, &gx8, &mut out8)?))?;
        let gbs = total as f64 / t1 / 1e9;
        println!(
            "{:>7} {:>9.1} {:>9.1} {:>8.0} {:>6.0}% {:>13.1}",
            ty.name(),
            total as f64 / (1 << 20) as f64,
            t1 * 1e6,
            gbs,
            100.0 * gbs / copy_gbs,
            t8 * 1e6
        );
    }
    Ok(())
}
