//! Run-time compilation of the kernels with NVRTC, for the device's architecture, with an
//! on-disk cache of the resulting CUBIN keyed by (SHA-256 of the sources, arch, options).
//!
//! NVRTC and the CUDA headers are found without a CUDA toolkit: `WASM_CHORD_NVRTC_LIB` (path of
//! libnvrtc.so.13) and `WASM_CHORD_CUDA_INCLUDE` (folder holding cuda_fp16.h) come first, then
//! the system library path and /usr/local/cuda, then the folder `scripts/install-nvrtc.sh`
//! fills from PyPI (~/.cache/wasm-chord/nvrtc).

use std::ffi::{c_char, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cudarc::nvrtc::sys as nv;
use sha2::{Digest, Sha256};

use crate::error::CudaError;
use crate::kernels::{KernelFile, HEADERS};

/// The folder under the user's cache where wasm-chord keeps its files.
fn cache_root() -> Option<PathBuf> {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return Some(PathBuf::from(x).join("wasm-chord"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("wasm-chord"))
}

/// Where `scripts/install-nvrtc.sh` puts the PyPI wheels by default.
fn pip_folder() -> Option<PathBuf> {
    cache_root().map(|c| c.join("nvrtc").join("nvidia").join("cu13"))
}

/// Loads libnvrtc once for the process. A library found by path is opened first, so that
/// cudarc's later open by soname ("libnvrtc.so.13") finds it already loaded.
pub fn load_nvrtc() -> Result<(), CudaError> {
    static LOADED: OnceLock<Result<(), String>> = OnceLock::new();
    LOADED
        .get_or_init(|| {
            let mut candidates: Vec<PathBuf> = Vec::new();
            if let Some(p) = std::env::var_os("WASM_CHORD_NVRTC_LIB").filter(|p| !p.is_empty()) {
                candidates.push(PathBuf::from(p));
            }
            let mut tried: Vec<String> = candidates.iter().map(|p| p.display().to_string()).collect();
            for p in &candidates {
                // SAFETY: loading NVRTC runs its initializers, which have no preconditions.
                if open_with_builtins(p) {
                    return Ok(());
                }
            }
            // SAFETY: as above; cudarc tries its list of sonames on the system library path.
            if unsafe { nv::is_culib_present() } {
                return Ok(());
            }
            tried.push("libnvrtc.so.13 on the library path".into());
            let mut fallbacks = vec![PathBuf::from("/usr/local/cuda/lib64/libnvrtc.so.13")];
            if let Some(f) = pip_folder() {
                fallbacks.push(f.join("lib").join("libnvrtc.so.13"));
            }
            for p in fallbacks {
                tried.push(p.display().to_string());
                if open_with_builtins(&p) {
                    return Ok(());
                }
            }
            Err(tried.join(", "))
        })
        .clone()
        .map_err(|tried| CudaError::NoNvrtc { tried })
}

/// Opens NVRTC at `path` and keeps it open for the life of the process (as cudarc keeps its
/// handle). NVRTC opens its builtins library by soname when it compiles, so the builtins beside
/// it are opened first too: found by path, they need not be on the library search path.
fn open_with_builtins(path: &Path) -> bool {
    if let Some(dir) = path.parent() {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("libnvrtc-builtins.so.") {
                    // SAFETY: loading a library runs its initializers, which have no preconditions.
                    if let Ok(lib) = unsafe { libloading::Library::new(e.path()) } {
                        std::mem::forget(lib);
                    }
                }
            }
        }
    }
    // SAFETY: as above.
    match unsafe { libloading::Library::new(path) } {
        Ok(lib) => {
            std::mem::forget(lib);
            true
        }
        Err(_) => false,
    }
}

/// Folders holding the CUDA runtime headers (cuda_fp16.h), in search order.
pub fn include_dir() -> Result<PathBuf, CudaError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = std::env::var_os("WASM_CHORD_CUDA_INCLUDE").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p));
    }
    if let Some(p) = std::env::var_os("CUDA_PATH").filter(|p| !p.is_empty()) {
        candidates.push(PathBuf::from(p).join("include"));
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    if let Some(f) = pip_folder() {
        candidates.push(f.join("include"));
    }
    candidates
        .iter()
        .find(|d| d.join("cuda_fp16.h").is_file())
        .cloned()
        .ok_or_else(|| CudaError::NoHeaders { tried: candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ") })
}

/// NVRTC's version, (major, minor).
pub fn version() -> Result<(i32, i32), CudaError> {
    load_nvrtc()?;
    let (mut major, mut minor) = (0, 0);
    // SAFETY: both pointers are valid for writes.
    let r = unsafe { nv::nvrtcVersion(&mut major, &mut minor) };
    check(r, "nvrtcVersion", "-")?;
    Ok((major, minor))
}

fn check(r: nv::nvrtcResult, call: &'static str, file: &str) -> Result<(), CudaError> {
    if r == nv::nvrtcResult::NVRTC_SUCCESS {
        Ok(())
    } else {
        Err(CudaError::Nvrtc { call, file: file.into(), detail: format!("{r:?}") })
    }
}

/// The options every kernel is compiled with, for `arch` ("sm_90a"), with the defines of
/// `WASM_CHORD_CUDA_PDL` (`launch::pdl_defines`).
fn options(arch: &str, include: &Path) -> Vec<String> {
    let mut opts = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into(), format!("--include-path={}", include.display())];
    opts.extend(crate::launch::pdl_defines().iter().map(|d| d.to_string()));
    opts
}

/// Compiles `file` for `arch` to a CUBIN, without touching the cache.
pub fn compile_uncached(file: &KernelFile, arch: &str) -> Result<Vec<u8>, CudaError> {
    load_nvrtc()?;
    let include = include_dir()?;
    compile_with(file, arch, &options(arch, &include))
}

/// Compiles `file` for `arch` with ptxas' resource report on, and returns the report
/// (registers, stack frame and spill bytes of every kernel), without touching the cache.
pub fn resource_report(file: &KernelFile, arch: &str) -> Result<String, CudaError> {
    load_nvrtc()?;
    let include = include_dir()?;
    let mut opts = options(arch, &include);
    opts.push("--ptxas-options=-v".into());
    compile_program(file, arch, &opts).map(|(_, log)| log)
}

fn compile_with(file: &KernelFile, arch: &str, opts: &[String]) -> Result<Vec<u8>, CudaError> {
    compile_program(file, arch, opts).map(|(cubin, _)| cubin)
}

/// The CUBIN and NVRTC's log of one compilation.
fn compile_program(file: &KernelFile, arch: &str, opts: &[String]) -> Result<(Vec<u8>, String), CudaError> {
    let err = |call| move |detail: String| CudaError::Nvrtc { call, file: file.name.into(), detail };
    let src = CString::new(file.source).map_err(|e| err("source")(e.to_string()))?;
    let name = CString::new(format!("{}.cu", file.name)).map_err(|e| err("name")(e.to_string()))?;
    let header_src: Vec<CString> = HEADERS.iter().map(|(_, s)| CString::new(*s)).collect::<Result<_, _>>().map_err(|e| err("header")(e.to_string()))?;
    let header_names: Vec<CString> = HEADERS.iter().map(|(n, _)| CString::new(*n)).collect::<Result<_, _>>().map_err(|e| err("header")(e.to_string()))?;
    let header_src_ptrs: Vec<*const c_char> = header_src.iter().map(|s| s.as_ptr()).collect();
    let header_name_ptrs: Vec<*const c_char> = header_names.iter().map(|s| s.as_ptr()).collect();
    let c_opts: Vec<CString> = opts.iter().map(|o| CString::new(o.as_str())).collect::<Result<_, _>>().map_err(|e| err("options")(e.to_string()))?;
    let opt_ptrs: Vec<*const c_char> = c_opts.iter().map(|s| s.as_ptr()).collect();

    let mut prog: nv::nvrtcProgram = std::ptr::null_mut();
    // SAFETY: every pointer refers to a NUL-terminated string that outlives the call, and the
    // header arrays have HEADERS.len() entries each.
    let r = unsafe {
        nv::nvrtcCreateProgram(
            &mut prog,
            src.as_ptr(),
            name.as_ptr(),
            HEADERS.len() as i32,
            header_src_ptrs.as_ptr(),
            header_name_ptrs.as_ptr(),
        )
    };
    check(r, "nvrtcCreateProgram", file.name)?;
    let result = (|| {
        // SAFETY: `prog` was created above; the options outlive the call.
        let r = unsafe { nv::nvrtcCompileProgram(prog, opt_ptrs.len() as i32, opt_ptrs.as_ptr()) };
        if r != nv::nvrtcResult::NVRTC_SUCCESS {
            return Err(CudaError::Compile { file: file.name.into(), arch: arch.into(), log: program_log(prog) });
        }
        let mut size = 0usize;
        // SAFETY: `prog` compiled successfully; `size` is valid for writes.
        check(unsafe { nv::nvrtcGetCUBINSize(prog, &mut size) }, "nvrtcGetCUBINSize", file.name)?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` holds the `size` bytes NVRTC reported.
        check(unsafe { nv::nvrtcGetCUBIN(prog, cubin.as_mut_ptr().cast()) }, "nvrtcGetCUBIN", file.name)?;
        Ok((cubin, program_log(prog)))
    })();
    // SAFETY: `prog` is a valid program, destroyed once.
    unsafe { nv::nvrtcDestroyProgram(&mut prog) };
    result
}

fn program_log(prog: nv::nvrtcProgram) -> String {
    let mut size = 0usize;
    // SAFETY: `prog` is valid; `size` is valid for writes.
    if unsafe { nv::nvrtcGetProgramLogSize(prog, &mut size) } != nv::nvrtcResult::NVRTC_SUCCESS || size == 0 {
        return "(no log)".into();
    }
    let mut log = vec![0u8; size];
    // SAFETY: `log` holds the `size` bytes NVRTC reported, NUL included.
    if unsafe { nv::nvrtcGetProgramLog(prog, log.as_mut_ptr().cast()) } != nv::nvrtcResult::NVRTC_SUCCESS {
        return "(no log)".into();
    }
    CStr::from_bytes_until_nul(&log).map(|c| c.to_string_lossy().into_owned()).unwrap_or_default()
}

/// The cache key of a compilation: sources, headers, arch, options and NVRTC version.
fn cache_key(file: &KernelFile, arch: &str, opts: &[String], nvrtc: (i32, i32)) -> String {
    let mut h = Sha256::new();
    h.update(file.source.as_bytes());
    for (name, src) in HEADERS {
        h.update(name.as_bytes());
        h.update(src.as_bytes());
    }
    h.update(arch.as_bytes());
    for o in opts {
        h.update(o.as_bytes());
        h.update([0]);
    }
    h.update(format!("nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    h.finalize().iter().take(12).map(|b| format!("{b:02x}")).collect()
}

/// The kernel cache folder: `WASM_CHORD_KERNEL_CACHE`, else ~/.cache/wasm-chord/kernels.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("WASM_CHORD_KERNEL_CACHE").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    cache_root().map(|c| c.join("kernels"))
}

/// Compiles `file` for `arch`, or reads the CUBIN of an identical earlier compilation from
/// the cache. A cache that cannot be written only costs a recompilation next time.
pub fn compile(file: &KernelFile, arch: &str) -> Result<Vec<u8>, CudaError> {
    load_nvrtc()?;
    let include = include_dir()?;
    let opts = options(arch, &include);
    let key = cache_key(file, arch, &opts, version()?);
    let path = cache_dir().map(|d| d.join(format!("{}-{arch}-{key}.cubin", file.name)));
    if let Some(p) = &path {
        if let Ok(bytes) = std::fs::read(p) {
            tracing::debug!(kernel = file.name, arch, path = %p.display(), "kernel cache hit");
            return Ok(bytes);
        }
    }
    let t = std::time::Instant::now();
    let cubin = compile_with(file, arch, &opts)?;
    tracing::info!(kernel = file.name, arch, ms = t.elapsed().as_millis() as u64, "compiled with NVRTC");
    if let Some(p) = &path {
        if let Err(e) = write_atomically(p, &cubin) {
            tracing::warn!("{e}");
        }
    }
    Ok(cubin)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CudaError> {
    let io = |source| CudaError::Cache { path: path.to_path_buf(), source };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // A unique temporary name, then a rename: concurrent processes never see a partial file.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}
