//! The kernels' dequantizers (kernels/dequant.cuh), built for the host with the C++ compiler
//! and emulated intrinsics (tests/host/dequant_host.cpp), decode every weight type as core
//! does: the block layouts and bit fiddling of the CUDA kernels are checked without a GPU.
//! Built twice: with the exact split decoding and with `WC_BIASED_DECODE=1`. The repacked
//! device layouts (src/repack.rs) are checked the same way on rows packed by `Layout::pack_row`.
//!
//! Without a C++ compiler (`$CXX`, else `c++`) the test prints a note and passes.

use std::path::PathBuf;
use std::process::Command;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::{quant, TensorType};
use wasm_chord_cuda::{ops, Layout};

const TYPES: [TensorType; 15] = TensorType::WEIGHTS;

#[test]
fn host_build_of_the_kernel_dequantizers_matches_core() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("wasm-chord-dequant-host-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for biased in [0, 1] {
        let exe = dir.join(format!("dequant_host_{biased}"));
        let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
        let built = Command::new(&cxx)
            .args(["-std=c++17", "-O1", "-fno-strict-aliasing", "-ffp-contract=off", "-I"])
            .arg(crate_dir.join("kernels"))
            .arg(format!("-DWC_BIASED_DECODE={biased}"))
            .arg(crate_dir.join("tests/host/dequant_host.cpp"))
            .arg("-o")
            .arg(&exe)
            .output();
        match built {
            Err(e) => {
                eprintln!("skipping: no C++ compiler ({cxx}: {e})");
                return;
            }
            Ok(o) => assert!(o.status.success(), "{cxx} failed:\n{}", String::from_utf8_lossy(&o.stderr)),
        }
        let mut r = ChaCha8Rng::seed_from_u64(11);
        let repacked = [(TensorType::Q6_K, Layout::Q6KSplit)];
        let cases = TYPES.iter().map(|&ty| (ty, Layout::File, None)).chain(repacked.map(|(ty, l)| (ty, l, None)));
        // The bench's other decodings of a file layout (ops::mmvq::CANDIDATE_DECODES).
        let candidates = ops::mmvq::CANDIDATE_DECODES.map(|(name, ty)| (ty, Layout::File, Some(name)));
        for (ty, layout, candidate) in cases.chain(candidates) {
            let n = 4 * 512;
            // Values of mixed magnitude, so scales and mins take varied values.
            let vals: Vec<f32> = (0..n).map(|i| (r.gen::<f32>() * 2.0 - 1.0) * (1 + i % 7) as f32).collect();
            let mut bytes = vec![0u8; ty.row_bytes(n).unwrap()];
            quant::quantize(ty, &vals, &mut bytes).unwrap();
            let mut want = vec![0.0f32; n];
            quant::dequantize(ty, &bytes, &mut want).unwrap();
            // A repacked layout is checked as one row of n values.
            let mut packed = vec![0u8; bytes.len()];
            layout.pack_row(&bytes, &mut packed);

            let name = candidate.unwrap_or(layout.kernel_type(ty));
            let (input, output) = (dir.join(format!("{name}.in")), dir.join(format!("{name}.out")));
            std::fs::write(&input, &packed).unwrap();
            let run = Command::new(&exe).arg(name).arg(&input).arg(&output).output().unwrap();
            assert!(run.status.success(), "{name} (biased {biased}): {}", String::from_utf8_lossy(&run.stderr));
            let got: Vec<f32> = std::fs::read(&output).unwrap().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            assert_eq!(got.len(), n, "{name}");
            let scale = want.iter().fold(1e-30f32, |m, v| m.max(v.abs()));
            let (i, err) = got.iter().zip(&want).map(|(g, w)| (g - w).abs() / scale).enumerate().fold((0, 0.0f32), |a, (i, e)| if e > a.1 { (i, e) } else { a });
            // Same products up to fused multiply-adds and the order of two roundings.
            assert!(err < 1e-6, "{name} (biased {biased}): weight {i}: got {} want {} (normalized error {err:e})", got[i], want[i]);
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
