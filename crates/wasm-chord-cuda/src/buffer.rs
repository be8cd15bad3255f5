//! Device buffers that either own their memory or borrow it from the decode-step arena
//! (`step.rs`), so a captured CUDA graph can keep using the same addresses step after step.

use std::mem::ManuallyDrop;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, LaunchArgs, PushKernelArg};

/// A device buffer of `T`: dereferences to the [`CudaSlice`] it wraps and passes to kernels
/// like one (`launch_builder(..).arg(&buf)`).
pub struct DeviceBuf<T> {
    slice: ManuallyDrop<CudaSlice<T>>,
    /// Borrowed buffers alias memory someone else frees (the step arena); dropping them
    /// leaves it alone.
    owned: bool,
}

impl<T> DeviceBuf<T> {
    /// Owns `slice`: dropping the buffer frees it.
    pub fn owned(slice: CudaSlice<T>) -> Self {
        Self { slice: ManuallyDrop::new(slice), owned: true }
    }

    /// `len` values of `T` at `ptr`, memory that the caller keeps alive for as long as the
    /// buffer is used and frees itself.
    ///
    /// # Safety
    /// `ptr` must be a device allocation of `stream`'s context holding at least `len` values
    /// of `T`, and outlive every use of the buffer.
    pub(crate) unsafe fn borrowed(stream: &Arc<CudaStream>, ptr: cudarc::driver::sys::CUdeviceptr, len: usize) -> Self {
        // SAFETY: the caller guarantees the allocation; event tracking is off on our context,
        // so no events are created.
        let slice = unsafe { stream.upgrade_device_ptr::<T>(ptr, len) };
        Self { slice: ManuallyDrop::new(slice), owned: false }
    }
}

impl<T> From<CudaSlice<T>> for DeviceBuf<T> {
    fn from(slice: CudaSlice<T>) -> Self {
        Self::owned(slice)
    }
}

impl<T> Drop for DeviceBuf<T> {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: dropped exactly once, here.
            unsafe { ManuallyDrop::drop(&mut self.slice) };
        } else {
            // SAFETY: taken exactly once, here; `leak` forgets the pointer without freeing it.
            let slice = unsafe { ManuallyDrop::take(&mut self.slice) };
            slice.leak();
        }
    }
}

impl<T> Deref for DeviceBuf<T> {
    type Target = CudaSlice<T>;

    fn deref(&self) -> &CudaSlice<T> {
        &self.slice
    }
}

impl<T> DerefMut for DeviceBuf<T> {
    fn deref_mut(&mut self) -> &mut CudaSlice<T> {
        &mut self.slice
    }
}

// SAFETY: forwards to cudarc's impls for the wrapped slice, which push its device pointer.
unsafe impl<'a, 'b: 'a, T> PushKernelArg<&'b DeviceBuf<T>> for LaunchArgs<'a> {
    #[inline(always)]
    fn arg(&mut self, arg: &'b DeviceBuf<T>) -> &mut Self {
        let slice: &'b CudaSlice<T> = &arg.slice;
        self.arg(slice)
    }
}

// SAFETY: as above, for a buffer the kernel writes.
unsafe impl<'a, 'b: 'a, T> PushKernelArg<&'b mut DeviceBuf<T>> for LaunchArgs<'a> {
    #[inline(always)]
    fn arg(&mut self, arg: &'b mut DeviceBuf<T>) -> &mut Self {
        let slice: &'b mut CudaSlice<T> = &mut arg.slice;
        self.arg(slice)
    }
}
