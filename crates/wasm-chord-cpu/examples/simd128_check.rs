//! Runs the wasm32 simd128 kernels against the scalar ones inside a JavaScript engine (cargo's
//! test harness cannot run wasm32-unknown-unknown): build with
//! `RUSTFLAGS="-C target-feature=+simd128" cargo build -p wasm-chord-cpu --example simd128_check
//! --target wasm32-unknown-unknown --release`, then `node scripts/simd128-check.mjs` calls
//! `check()`, which returns the number of (type, row, token) results that disagree.

#[cfg(all(target_arch = "wasm32", target_feature = "simd128"))]
#[no_mangle]
pub extern "C" fn check() -> u32 {
    use wasm_chord_core::{quant, TensorType};
    use wasm_chord_cpu::kernels::{quantize_act, ActType, Kernels};

    let (scalar, simd) = (Kernels::scalar(), Kernels::simd128());
    // A 64-bit LCG: any spread of values will do, and rand does not build here.
    let mut state = 5u64;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
    };
    let mut failures = 0;
    for ty in TensorType::ALL {
        if !scalar.supports(ty) {
            continue;
        }
        let k = if ty.block_len() == 256 { 768 } else { 224 };
        let (n_rows, n_tok) = (5, 3);
        let xw: Vec<f32> = (0..n_rows * k).map(|_| next()).collect();
        let xa: Vec<f32> = (0..n_tok * k).map(|_| next()).collect();
        let mut w = vec![0u8; ty.row_bytes(k).unwrap() * n_rows];
        quant::quantize(ty, &xw, &mut w).unwrap();
        let act = ActType::for_weight(ty);
        let ab = act.row_bytes(k).unwrap();
        let mut a = vec![0u8; ab * n_tok];
        for (s, d) in xa.chunks(k).zip(a.chunks_mut(ab)) {
            quantize_act(act, s, d);
        }
        for nt in 1..=n_tok {
            let (mut want, mut got) = (vec![0.0; n_rows * nt], vec![0.0; n_rows * nt]);
            scalar.matmul(ty, k, &w, n_rows, &a[..ab * nt], nt, &mut want).unwrap();
            simd.matmul(ty, k, &w, n_rows, &a[..ab * nt], nt, &mut got).unwrap();
            let scale = want.iter().fold(1.0f32, |m, v| m.max(v.abs()));
            failures += want.iter().zip(&got).filter(|(s, g)| (*s - *g).abs() > 1e-5 * scale).count() as u32;
        }
    }
    failures
}

#[cfg(not(all(target_arch = "wasm32", target_feature = "simd128")))]
#[allow(dead_code)] // a cdylib on every target; `main` only explains itself when run natively
fn main() {
    eprintln!("simd128_check is built for wasm32-unknown-unknown with +simd128; see its module docs");
}
