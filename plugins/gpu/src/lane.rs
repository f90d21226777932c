//! A batch worker's own CUDA stream, its "lane": ONNX Runtime runs the worker's models on it
//! (the CUDA provider's user compute stream), and the worker's crop uploads, face-input kernel
//! and output downloads go on it too, as do the output frames made on the GPU
//! ([`crate::frames`]: avatar frames up, the compose kernel, finished frames down).
//!
//! Work on one stream runs in the order it was queued. So a batch's steps (crops up, face
//! inputs built, the model, outputs down) need no wait of the host between them, and the
//! worker can gather and queue the next batch while the GPU runs this one. Without a lane,
//! every step waited for the GPU, and the GPU waited for the host's work between batches: on
//! an H100, a batch of 128 spent 2.4 ms of host work for 7.8 ms of model run.
//!
//! A [`Mark`] recorded after a batch's last step says when all of it is done; the host reads
//! the batch's outputs, or writes that batch's page-locked inputs again, only after waiting
//! for it.

use crate::cuda::{driver, CropBatch, Gpu, GpuError, OutputBatch};
use cudarc::driver::{
    sys, CudaEvent, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, PinnedHostSlice,
};
use std::sync::Arc;
use std::time::Duration;

/// A stream of its own on a GPU (see the module's docs).
pub struct Lane {
    gpu: Arc<Gpu>,
    stream: Arc<CudaStream>,
}

/// A point in a lane's work: done once everything queued on the lane before it is.
pub struct Mark(CudaEvent);

impl Gpu {
    /// A new lane on this GPU.
    pub fn lane(self: &Arc<Self>) -> Result<Lane, GpuError> {
        let stream = self.stream.context().new_stream().map_err(driver)?;
        Ok(Lane {
            gpu: self.clone(),
            stream,
        })
    }
}

impl Lane {
    /// The GPU the lane is on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The lane's stream.
    pub(crate) fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The stream, for ONNX Runtime's CUDA provider (`user_compute_stream`).
    pub fn raw_stream(&self) -> *mut () {
        self.stream.cu_stream() as *mut ()
    }

    /// Queues the upload of the first `n` crops of `batch` and the kernel writing the model's
    /// fp32 face inputs from them (`n × [6][CROP][CROP]`) to `dst`; returns without waiting.
    ///
    /// # Safety
    /// `dst` must be device memory on this GPU's primary context with room for
    /// `n × 6 × CROP²` f32, read only by work queued on this lane after this call. `batch`'s
    /// host side must not be written again until a [`Mark`] made after this call is done.
    pub unsafe fn face_inputs_from(
        &self,
        batch: &mut CropBatch,
        n: usize,
        dst: u64,
    ) -> Result<(), GpuError> {
        let Some(len) = batch.bytes_of(n)? else {
            return Ok(());
        };
        let s = &self.stream;
        s.context().bind_to_thread().map_err(driver)?;
        let host = batch.host.as_slice().map_err(driver)?;
        {
            let (crops, _recorded) = batch.device.device_ptr_mut(s);
            // SAFETY: page-locked host memory of `len` bytes into the crops' room on the GPU,
            // which holds `batch.faces()` ≥ n crops; the host side stays untouched until the
            // copy is done (the caller's promise).
            unsafe {
                cudarc::driver::result::memcpy_htod_async(crops, &host[..len], s.cu_stream())
            }
            .map_err(driver)?;
        }
        // SAFETY: `batch.device` holds n crops (uploaded just before, on this lane); `dst` the
        // caller vouches for, read only by work queued here after.
        unsafe { self.gpu.queue_face_inputs(s, &batch.device, n, dst) }
    }

    /// Queues the copy of `values` f32 from `src` on the GPU into `into`; returns without
    /// waiting.
    ///
    /// # Safety
    /// `src` must be device memory on this GPU's primary context holding at least `values`
    /// f32, written by work queued on this lane before this call and not rewritten before the
    /// copy. `into`'s values must not be read until a [`Mark`] made after this call is done.
    pub unsafe fn download(
        &self,
        src: u64,
        values: usize,
        into: &mut OutputBatch,
    ) -> Result<(), GpuError> {
        self.stream.context().bind_to_thread().map_err(driver)?;
        let host = into.room_for(values)?;
        // SAFETY: `host` has room for `values`; `src` the caller vouches for.
        unsafe { cudarc::driver::result::memcpy_dtoh_async(host, src, self.stream.cu_stream()) }
            .map_err(driver)?;
        into.filled = values;
        Ok(())
    }

    /// A mark after everything queued on this lane so far.
    pub fn mark(&self) -> Result<Mark, GpuError> {
        // Timed, to tell a batch's time on the GPU; a waiting thread sleeps rather than spins
        // (a batch takes milliseconds, and the server's other threads want the core).
        let flags = sys::CUevent_flags::CU_EVENT_BLOCKING_SYNC;
        self.stream
            .record_event(Some(flags))
            .map(Mark)
            .map_err(driver)
    }

    /// `bytes` copied to new memory on the GPU, on this lane (waits for the copy: an avatar
    /// frame goes up once, [`crate::frames`]).
    pub fn upload(&self, bytes: &[u8]) -> Result<CudaSlice<u8>, GpuError> {
        let s = &self.stream;
        s.clone_htod(bytes).map_err(driver)
    }

    /// `len` bytes of GPU memory, on this lane.
    pub fn alloc(&self, len: usize) -> Result<CudaSlice<u8>, GpuError> {
        // SAFETY: only ever written by the compose kernel before it is read.
        unsafe { self.stream.alloc::<u8>(len) }.map_err(driver)
    }

    /// `len` bytes of page-locked, cached host memory (read by the CPU's encoders).
    pub fn pinned(&self, len: usize) -> Result<PinnedHostSlice<u8>, GpuError> {
        // SAFETY: written by a download before it is read.
        unsafe { self.stream.context().alloc_pinned_with_flags::<u8>(len, 0) }.map_err(driver)
    }

    /// Queues the copy of `len` bytes of `src` into page-locked `dst`.
    ///
    /// # Safety
    /// `dst` must be page-locked host memory of at least `len` bytes, not read until a mark
    /// made after this call is done.
    pub(crate) unsafe fn download_bytes(
        &self,
        src: &CudaSlice<u8>,
        len: usize,
        dst: *mut u8,
    ) -> Result<(), GpuError> {
        let s = &self.stream;
        let (ptr, _recorded) = src.device_ptr(s);
        // SAFETY: `dst` has room for `len` (the caller's promise), `src` holds at least `len`.
        let host = unsafe { std::slice::from_raw_parts_mut(dst, len) };
        unsafe { cudarc::driver::result::memcpy_dtoh_async(host, ptr, s.cu_stream()) }
            .map_err(driver)
    }
}

impl Mark {
    /// Waits until the work before this mark is done; an error is one of that work's.
    pub fn wait(&self) -> Result<(), GpuError> {
        self.0.synchronize().map_err(driver)
    }

    /// The GPU's time from `earlier` to this mark, once both are done.
    pub fn since(&self, earlier: &Mark) -> Result<Duration, GpuError> {
        let ms = earlier.0.elapsed_ms(&self.0).map_err(driver)?;
        Ok(Duration::from_secs_f64(f64::from(ms.max(0.0)) / 1e3))
    }
}
