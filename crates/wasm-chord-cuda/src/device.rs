//! One CUDA device: its context and stream, its architecture, and the kernels compiled for it.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, CudaStream};
use cudarc::nvrtc::Ptx;
use wasm_chord_core::backend::DeviceMemory;

use crate::error::{driver, CudaError};
use crate::{kernels, nvrtc};

pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    name: String,
    arch: String,
    sm_count: usize,
    /// Whether kernels that opt in launch as programmatic dependents (sm_90+, unless
    /// `WASM_CHORD_CUDA_PDL=0`): `crate::launch`.
    pdl: bool,
    modules: Vec<Arc<CudaModule>>,
    /// Every kernel of every module, resolved once at start-up (read without a lock).
    functions: HashMap<String, CudaFunction>,
}

/// Whether the CUDA driver library can be opened at all (no GPU is touched).
pub fn driver_present() -> bool {
    // SAFETY: only tries to open libcuda; no driver call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

impl CudaDevice {
    /// Opens GPU `ordinal` and compiles (or loads from the cache) every kernel for it.
    /// Without a driver or a GPU this is an error saying so, never a panic.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver);
        }
        let count = CudaContext::device_count().map_err(|e| CudaError::NoDevice { detail: format!("cuInit/cuDeviceGetCount failed: {e}") })?;
        if count <= 0 || ordinal >= count as usize {
            return Err(CudaError::NoDevice { detail: format!("the driver reports {count} device(s), asked for device {ordinal}") });
        }
        let ctx = CudaContext::new(ordinal).map_err(driver(format!("creating a context on device {ordinal}")))?;
        // One stream orders everything, so cudarc's per-buffer event tracking is not needed.
        // SAFETY: no buffer exists yet on this context.
        unsafe { ctx.disable_event_tracking() };
        // A stream of our own: the legacy default stream cannot be captured into a CUDA graph.
        let stream = ctx.new_stream().map_err(driver("creating a stream"))?;
        let name = ctx.name().map_err(driver("reading the device name"))?;
        let (major, minor) = ctx.compute_capability().map_err(driver("reading the compute capability"))?;
        let arch = format!("sm_{major}{minor}");
        let sm_count = ctx
            .attribute(cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(driver("reading the multiprocessor count"))?
            .max(1) as usize;
        // The files compile in parallel on a cold cache (NVRTC programs are independent).
        let files = kernels::all();
        let cubins: Vec<Result<Vec<u8>, CudaError>> = std::thread::scope(|s| {
            let handles: Vec<_> = files.iter().map(|file| s.spawn(|| nvrtc::compile(file, &arch))).collect();
            handles
                .into_iter()
                .zip(&files)
                .map(|(h, file)| {
                    h.join().unwrap_or_else(|_| Err(CudaError::Nvrtc { call: "compile thread", file: file.name.into(), detail: "panicked".into() }))
                })
                .collect()
        });
        let mut modules = Vec::new();
        let mut functions = HashMap::new();
        for (file, cubin) in files.iter().zip(cubins) {
            let cubin = cubin?;
            let names = kernel_names(&cubin);
            let module = ctx.load_module(Ptx::from_binary(cubin)).map_err(driver(format!("loading {}.cu for {arch}", file.name)))?;
            // A `.text.` section can also hold a device function that was not inlined: only the
            // names the module resolves as kernels are kept.
            for kernel in names {
                if let Ok(f) = module.load_function(&kernel) {
                    functions.insert(kernel, f);
                }
            }
            modules.push(module);
        }
        tracing::info!(device = %name, arch = %arch, kernels = functions.len(), "CUDA device ready");
        let pdl = major >= 9 && crate::launch::pdl_mode() != crate::launch::PdlMode::Off;
        Ok(Self { ctx, stream, name, arch, sm_count, pdl, modules, functions })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The architecture kernels are compiled for ("sm_90").
    pub fn arch(&self) -> &str {
        &self.arch
    }

    /// Streaming multiprocessors: how many blocks fill the GPU.
    pub fn sm_count(&self) -> usize {
        self.sm_count
    }

    /// Whether the kernels that call `PDL_ENTER()` are launched as programmatic dependents of
    /// the kernel before them (`crate::launch::Launch::launch`'s `pdl`).
    pub fn pdl(&self) -> bool {
        self.pdl
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The kernel named `name` (resolved at start-up; a name the cubins' section table did not
    /// show is looked up in the modules, without being remembered).
    pub fn function(&self, name: &str) -> Result<CudaFunction, CudaError> {
        if let Some(f) = self.functions.get(name) {
            return Ok(f.clone());
        }
        self.modules
            .iter()
            .find_map(|m| m.load_function(name).ok())
            .ok_or_else(|| CudaError::MissingKernel { name: name.into() })
    }

    /// Free and total memory of the device.
    pub fn memory(&self) -> Result<DeviceMemory, CudaError> {
        let (free, total) = self.ctx.mem_get_info().map_err(driver("reading the free device memory"))?;
        Ok(DeviceMemory { free: free as u64, total: total as u64 })
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver("synchronizing the stream"))
    }
}

/// Names of the kernels in a cubin: ELF section names `.text.<kernel>` (NVRTC names a kernel's
/// code section so), read from the section-name strings without parsing the ELF structure.
pub fn kernel_names(cubin: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = cubin
        .split(|&b| b == 0)
        .filter_map(|s| s.strip_prefix(b".text."))
        .filter(|s| !s.is_empty() && s.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'_'))
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}
