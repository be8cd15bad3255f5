//! The kernels' block structs (kernels/common.cuh) have the sizes of core's Rust block structs:
//! the header's static_asserts are parsed and compared with `TensorType::block_bytes`.

use wasm_chord_core::TensorType;

const COMMON: &str = include_str!("../kernels/common.cuh");

/// `(type name, bytes)` for every `static_assert(sizeof(block_<name>) == <bytes>, ...)`.
fn asserted_sizes() -> Vec<(String, usize)> {
    COMMON
        .lines()
        .filter_map(|l| {
            let rest = l.trim().strip_prefix("static_assert(sizeof(block_")?;
            let (name, rest) = rest.split_once(')')?;
            let n = rest.trim().strip_prefix("==")?.split(',').next()?.trim().parse().ok()?;
            Some((name.to_string(), n))
        })
        .collect()
}

#[test]
fn cuda_block_sizes_match_core() {
    let sizes = asserted_sizes();
    for (name, bytes) in &sizes {
        let ty = TensorType::from_name(name).unwrap_or_else(|| panic!("block_{name} names no tensor type"));
        assert_eq!(*bytes, ty.block_bytes(), "block_{name}");
    }
    // Every block type of core is mirrored.
    for ty in TensorType::ALL.into_iter().filter(|t| !t.is_float()) {
        assert!(sizes.iter().any(|(n, _)| TensorType::from_name(n) == Some(ty)), "no static_assert for {ty} in common.cuh");
    }
}

#[test]
fn every_struct_has_a_size_assert() {
    let structs = COMMON.lines().filter(|l| l.starts_with("struct block_")).count();
    assert_eq!(structs, asserted_sizes().len());
}
