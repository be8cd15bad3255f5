//! The host's launch geometry (`ops::matvec::config`: warps per block, rows per warp) mirrors
//! the per-type configurations in kernels/matvec.cu (`MatvecCfg`, `Matmul8Cfg`): a mismatch
//! would leave rows unwritten or written twice. Likewise `ops::mmvq::config` and mmvq.cu's
//! `MmvqCfg`/`Mmvq8Cfg`. Parsed from the source, no GPU needed.

use wasm_chord_core::TensorType;
use wasm_chord_cuda::{ops, Layout};
use wasm_chord_cuda::ops::matvec::config;

const SOURCE: &str = include_str!("../kernels/matvec.cu");
const MMVQ_SOURCE: &str = include_str!("../kernels/mmvq.cu");

/// (warps, rows) of `<cfg><T>` for the kernel struct name of `ty` (e.g. Q4_K), or the default.
fn geometry(cfg: &str, ty: TensorType) -> (usize, usize) {
    geometry_in(SOURCE, cfg, "Cfg", ty.name())
}

/// Likewise for a kernel type name (`q6_K_r`: struct Q6_K_R).
fn geometry_in(source: &str, cfg: &str, base: &str, ty: &str) -> (usize, usize) {
    let kernel_name = ty.to_uppercase();
    let special = format!("template <> struct {cfg}<{kernel_name}> : {base}<");
    let default = format!("template <class T> struct {cfg} : {base}<");
    let line = source
        .lines()
        .find_map(|l| l.trim().strip_prefix(&special))
        .or_else(|| source.lines().find_map(|l| l.trim().strip_prefix(&default)))
        .unwrap_or_else(|| panic!("no {cfg} for {ty}"));
    let mut nums = line.split(['>', ',']).map(|n| n.trim().parse::<usize>().unwrap());
    (nums.next().unwrap(), nums.next().unwrap())
}

#[test]
fn host_launch_geometry_mirrors_the_kernel_configurations() {
    for ty in TensorType::WEIGHTS {
        assert_eq!(config(ty, false), geometry("MatvecCfg", ty), "matvec_{ty}");
        assert_eq!(config(ty, true), geometry("Matmul8Cfg", ty), "matmul8_{ty}");
    }
}

#[test]
fn int8_launch_geometry_mirrors_the_kernel_configurations() {
    // Every type in the file layout and in the layout the backend picks (a repacked layout is a
    // kernel type of its own, with its own configuration).
    for ty in TensorType::WEIGHTS.into_iter().filter(|t| ops::mmvq::supports(*t)) {
        for layout in [Layout::File, Layout::preferred(ty)] {
            let name = layout.kernel_type(ty);
            assert_eq!(ops::mmvq::config(ty, layout, false), geometry_in(MMVQ_SOURCE, "MmvqCfg", "MmvqShape", name), "mmvq_{name}");
            assert_eq!(ops::mmvq::config(ty, layout, true), geometry_in(MMVQ_SOURCE, "Mmvq8Cfg", "MmvqShape", name), "mmvq8_{name}");
        }
    }
}
