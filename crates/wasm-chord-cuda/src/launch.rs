//! Kernel launches through `cuLaunchKernelEx`, for kernels that opt in to Programmatic
//! Dependent Launch (sm_90+): launched with `CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION`,
//! such a kernel may start while the kernel before it on the stream drains; it must execute
//! `PDL_ENTER()` (kernels/common.cuh) before touching anything an earlier kernel wrote, in every
//! block. Stream capture keeps the programmatic edges, so decode-step graphs get them too.
//! cudarc's launch builder takes no launch attributes, hence this small builder of its own.

use std::ffi::c_void;
use std::sync::OnceLock;

use cudarc::driver::sys::{self, CUlaunchAttribute, CUlaunchAttributeID, CUlaunchConfig};
use cudarc::driver::{CudaFunction, CudaSlice, CudaView, CudaViewMut, DevicePtr, DriverError, LaunchConfig};

use crate::buffer::DeviceBuf;
use crate::device::CudaDevice;

/// How kernels overlap their predecessor (`WASM_CHORD_CUDA_PDL`, read once): `0` builds the
/// kernels without the wait/trigger/prefetch lines and launches everything plainly (the kernels
/// as before, for comparisons in one binary); `noprefetch` keeps the dependent launches but
/// drops the matvecs' early L2 prefetch of their weights; `early` triggers the next kernel
/// before the wait instead of after it (slower on the H100); anything else: on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PdlMode {
    Off,
    NoPrefetch,
    EarlyTrigger,
    On,
}

pub fn pdl_mode() -> PdlMode {
    static MODE: OnceLock<PdlMode> = OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("WASM_CHORD_CUDA_PDL").as_deref() {
        Ok("0") => PdlMode::Off,
        Ok("noprefetch") => PdlMode::NoPrefetch,
        Ok("early") => PdlMode::EarlyTrigger,
        _ => PdlMode::On,
    })
}

/// The NVRTC defines of [`pdl_mode`] (they are part of the kernel cache key).
pub fn pdl_defines() -> &'static [&'static str] {
    match pdl_mode() {
        PdlMode::Off => &["-DWASM_CHORD_NO_PDL"],
        PdlMode::NoPrefetch => &["-DWASM_CHORD_NO_PREFETCH"],
        PdlMode::EarlyTrigger => &["-DWASM_CHORD_PDL_EARLY_TRIGGER"],
        PdlMode::On => &[],
    }
}

/// 8-byte words of argument storage per launch (mmvq3's 112-byte struct plus a few more).
const WORDS: usize = 48;
const MAX_ARGS: usize = 24;

/// The arguments of one launch, copied by value (device buffers as their addresses), then
/// launched with or without the programmatic-serialization attribute.
pub struct Launch<'a> {
    dev: &'a CudaDevice,
    f: &'a CudaFunction,
    words: [u64; WORDS],
    offsets: [usize; MAX_ARGS],
    n_args: usize,
    used: usize,
    overflow: bool,
}

/// A kernel argument as the kernel receives it.
pub trait KernelArg {
    fn push_to(&self, l: &mut Launch<'_>);
}

impl<'a> Launch<'a> {
    pub fn new(dev: &'a CudaDevice, f: &'a CudaFunction) -> Self {
        Self { dev, f, words: [0; WORDS], offsets: [0; MAX_ARGS], n_args: 0, used: 0, overflow: false }
    }

    pub fn arg<A: KernelArg + ?Sized>(&mut self, a: &A) -> &mut Self {
        a.push_to(self);
        self
    }

    /// Appends `v`'s bytes at the next 8-byte boundary.
    pub fn value<T: Copy>(&mut self, v: &T) -> &mut Self {
        let words = std::mem::size_of::<T>().div_ceil(8);
        if std::mem::align_of::<T>() > 8 || self.n_args == MAX_ARGS || self.used + words > WORDS {
            self.overflow = true;
            return self;
        }
        // SAFETY: `T` is plain data of `size_of::<T>()` bytes, copied into words that have room
        // for it (checked above); the destination is 8-byte aligned, which covers `T`.
        unsafe { std::ptr::copy_nonoverlapping(v as *const T as *const u8, self.words[self.used..].as_mut_ptr() as *mut u8, std::mem::size_of::<T>()) };
        self.offsets[self.n_args] = self.used;
        self.n_args += 1;
        self.used += words;
        self
    }

    /// Launches on the device's stream; with `pdl` (the kernel calls `PDL_ENTER()` before its
    /// first dependent access, in every block) as a programmatic dependent of the previous
    /// kernel.
    ///
    /// # Safety
    /// The arguments must match the kernel's parameters, and every index the kernel forms must
    /// lie inside the buffers passed.
    pub unsafe fn launch(&mut self, cfg: LaunchConfig, pdl: bool) -> Result<(), DriverError> {
        if self.overflow {
            return Err(DriverError(sys::CUresult::CUDA_ERROR_INVALID_VALUE));
        }
        self.dev.context().bind_to_thread()?;
        let base = self.words.as_mut_ptr();
        let mut params = [std::ptr::null_mut::<c_void>(); MAX_ARGS];
        for (p, &off) in params.iter_mut().zip(&self.offsets[..self.n_args]) {
            // SAFETY: every offset lies inside `words` (checked in `value`).
            *p = unsafe { base.add(off) } as *mut c_void;
        }
        // SAFETY: an all-zero attribute is a valid (ignored) value; the fields are set below.
        let mut attr: CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.dev.stream().cu_stream(),
            attrs: if pdl { &mut attr } else { std::ptr::null_mut() },
            numAttrs: u32::from(pdl),
        };
        // SAFETY: `params` points at this launch's argument values, alive until the call
        // returns (the driver copies them); the caller vouches for their match with the kernel.
        unsafe { sys::cuLaunchKernelEx(&config, self.f.cu_function(), params.as_mut_ptr(), std::ptr::null_mut()) }.result()
    }
}

macro_rules! by_value {
    ($($t:ty),*) => {$(
        impl KernelArg for $t {
            fn push_to(&self, l: &mut Launch<'_>) {
                l.value(self);
            }
        }
    )*};
}
by_value!(i32, u32, u64, f32);

impl<T> KernelArg for CudaSlice<T> {
    fn push_to(&self, l: &mut Launch<'_>) {
        let (ptr, _sync) = self.device_ptr(l.dev.stream());
        l.value(&ptr);
    }
}

impl<T> KernelArg for CudaView<'_, T> {
    fn push_to(&self, l: &mut Launch<'_>) {
        let (ptr, _sync) = self.device_ptr(l.dev.stream());
        l.value(&ptr);
    }
}

impl<T> KernelArg for CudaViewMut<'_, T> {
    fn push_to(&self, l: &mut Launch<'_>) {
        let (ptr, _sync) = self.device_ptr(l.dev.stream());
        l.value(&ptr);
    }
}

impl<T> KernelArg for DeviceBuf<T> {
    fn push_to(&self, l: &mut Launch<'_>) {
        let slice: &CudaSlice<T> = self;
        slice.push_to(l);
    }
}
