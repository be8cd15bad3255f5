//! The host's launch geometry (`ops::matvec::config`: warps per block, rows per warp) mirrors
//! the per-type configurations in kernels/matvec.cu (`MatvecCfg`, `Matmul8Cfg`): a mismatch
//! would leave rows unwritten or written twice. Parsed from the source, no GPU needed.

use wasm_chord_core::TensorType;
use wasm_chord_cuda::ops::matvec::config;

const SOURCE: &str = include_str!("../kernels/matvec.cu");

/// (warps, rows) of `<cfg><T>` for the kernel struct name of `ty` (e.g. Q4_K), or the default.
fn geometry(cfg: &str, ty: TensorType) -> (usize, usize) {
    let kernel_name = ty.name().to_uppercase();
    let special = format!("template <> struct {cfg}<{kernel_name}> : Cfg<");
    let default = format!("template <class T> struct {cfg} : Cfg<");
    let line = SOURCE
        .lines()
        .find_map(|l| l.trim().strip_prefix(&special))
        .or_else(|| SOURCE.lines().find_map(|l| l.trim().strip_prefix(&default)))
        .unwrap_or_else(|| panic!("no {cfg} for {ty}"));
    let mut nums = line.split(',').map(|n| n.trim().parse::<usize>().unwrap());
    (nums.next().unwrap(), nums.next().unwrap())
}

#[test]
fn host_launch_geometry_mirrors_the_kernel_configurations() {
    for ty in TensorType::WEIGHTS {
        assert_eq!(config(ty, false), geometry("MatvecCfg", ty), "matvec_{ty}");
        assert_eq!(config(ty, true), geometry("Matmul8Cfg", ty), "matmul8_{ty}");
    }
}
