//! Seeded fuzzing of the reader on the real models: truncated and bit-flipped copies must
//! each give `Ok` or `Err`, never a panic, and an `Ok` must still describe a consistent file.

mod gguf_common;

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use wasm_chord_core::gguf::{GgufError, GgufFile, GgufHeader};

const CASES: usize = 200;
/// Truncations past the header stay within this many bytes of data, to keep copies cheap:
/// every truncation of these files must fail, wherever it cuts.
const DATA_WINDOW: usize = 8 << 20;

/// Runs `parse` catching panics, so a panic becomes a failure message naming the case.
fn no_panic<T>(case: &str, parse: impl FnOnce() -> Result<T, GgufError>) -> Result<T, GgufError> {
    match catch_unwind(AssertUnwindSafe(parse)) {
        Ok(result) => result,
        Err(panic) => {
            let msg =
                panic.downcast_ref::<String>().cloned().or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("{case}: reader panicked: {msg:?}");
        }
    }
}

/// What a parse that succeeded must still guarantee.
fn check_consistent(case: &str, header: &GgufHeader, file_len: usize) {
    for t in header.tensors() {
        let end = header.data_offset() + t.offset + t.n_bytes as u64;
        assert!(end <= file_len as u64, "{case}: tensor {} ends at {end}, past {file_len}", t.name);
        assert_eq!(t.n_bytes, t.ty.row_bytes(t.row_len()).unwrap() * t.n_rows(), "{case}: {}", t.name);
    }
}

fn fuzz(name: &str, seed: u64) {
    let Some(path) = gguf_common::model_path(name) else { return };
    let mut bytes = std::fs::read(&path).unwrap();
    let len = bytes.len();
    let header = GgufHeader::parse(&bytes).unwrap();
    let data_offset = header.data_offset() as usize;
    let last_end = header.tensors().iter().map(|t| header.data_offset() + t.offset + t.n_bytes as u64).max().unwrap();
    assert_eq!(last_end as usize, len, "the last tensor ends the file, so every truncation must fail");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);

    // Truncations: half cut inside the header and metadata, half inside the tensor data.
    for i in 0..CASES {
        let cut = if i % 2 == 0 {
            rng.gen_range(0..data_offset)
        } else {
            rng.gen_range(data_offset..len.min(data_offset + DATA_WINDOW))
        };
        let case = format!("{name} truncated to {cut} bytes");
        let copy = bytes[..cut].to_vec();
        let result = no_panic(&case, || GgufFile::from_bytes(copy));
        assert!(result.is_err(), "{case}: parsed");
    }

    // Bit flips, in place and restored: half inside the header and metadata, where parsing
    // happens, half anywhere.
    let mut failures_in_header = 0;
    for i in 0..CASES {
        let at = if i % 2 == 0 { rng.gen_range(0..data_offset) } else { rng.gen_range(0..len) };
        let bit = 1u8 << rng.gen_range(0..8);
        let case = format!("{name} with bit {bit:#04x} flipped at {at}");
        bytes[at] ^= bit;
        let result = no_panic(&case, || GgufHeader::parse(&bytes));
        bytes[at] ^= bit;
        match result {
            Ok(h) => check_consistent(&case, &h, len),
            // Tensor data is never parsed, so a flip there cannot make the file unreadable.
            Err(e) => {
                assert!(at < data_offset, "{case}: flip in tensor data gave {e}");
                failures_in_header += 1;
            }
        }
    }
    // Guards against a fuzzer that flips nothing: many header flips must be caught.
    assert!(failures_in_header > CASES / 10, "{name}: only {failures_in_header} flips were errors");
}

#[test]
fn fuzz_smollm2() {
    fuzz(gguf_common::SMOLLM2, 1);
}

#[test]
fn fuzz_gemma3() {
    fuzz(gguf_common::GEMMA3, 2);
}
