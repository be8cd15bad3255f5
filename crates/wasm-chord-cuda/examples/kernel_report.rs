//! Prints ptxas' resource report (registers, shared memory, spills) of each kernel file for an
//! architecture, without a GPU: `cargo run -p wasm-chord-cuda --example kernel_report [sm_90a]
//! [file] [--cubin DIR]`; with `--cubin DIR` it also writes each file's CUBIN to DIR, for a
//! disassembler (`nvdisasm -c`, pip package nvidia-cuda-nvdisasm). With `--variants`, the
//! matvec candidates of `ops::matvec::VARIANTS` (both decoding modes) instead; with
//! `--mmvq-variants`, the int8 candidates of `ops::mmvq::VARIANTS` (and the candidate decodings).

use wasm_chord_cuda::{kernels, nvrtc};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arch = args.first().map_or("sm_90a", String::as_str);
    let mut files = kernels::all().to_vec();
    if args.iter().any(|a| a == "--variants") {
        files = [("matvec_variants", false), ("matvec_variants_b", true)]
            .into_iter()
            .map(|(name, biased)| kernels::KernelFile { name, source: Box::leak(wasm_chord_cuda::ops::matvec::variant_source(biased).into_boxed_str()) })
            .collect();
    }
    if args.iter().any(|a| a == "--mmvq-variants") {
        files = vec![kernels::KernelFile { name: "mmvq_variants", source: Box::leak(wasm_chord_cuda::ops::mmvq::variant_source().into_boxed_str()) }];
    }
    for file in files {
        if args.get(1).is_some_and(|only| !only.starts_with("--") && only != file.name) {
            continue;
        }
        if let Some(dir) = args.iter().position(|a| a == "--cubin").and_then(|i| args.get(i + 1)) {
            std::fs::write(std::path::Path::new(dir).join(format!("{}-{arch}.cubin", file.name)), nvrtc::compile_uncached(&file, arch)?)?;
        }
        let report = nvrtc::resource_report(&file, arch)?;
        let mut kernel = String::new();
        for line in report.lines() {
            if let Some(rest) = line.split("Compiling entry function '").nth(1) {
                kernel = rest.split('\'').next().unwrap_or_default().to_string();
            } else if line.contains("registers") || line.contains("spill") {
                println!("{}.cu {kernel}: {}", file.name, line.trim().trim_start_matches("ptxas info    : "));
            }
        }
    }
    Ok(())
}
