//! The lip-sync kernels on an NVIDIA GPU, through the CUDA driver API (`cudarc`).
//!
//! The kernels (`kernels.cu`) are compiled when a GPU is opened, by NVRTC, to PTX for the
//! card's own compute capability (`compute_90` on a Hopper H100/H200), which the driver turns
//! into the card's machine code as it loads the module; a card NVRTC does not know yet gets
//! PTX for the newest architecture it does, which the driver compiles forward. `--fmad=false`
//! keeps each kernel's arithmetic that of its CPU reference ([`crate::reference`]).
//!
//! Most calls here take and give host memory: what `facecast selftest` compares with the CPU
//! references. They also time the three kernels on frames resident on the GPU. The live path
//! works in memory made once per batch shape: [`Gpu::face_inputs_from`] builds the lip-sync
//! model's face input in ONNX Runtime's input tensor from crops in a [`CropBatch`], so that a
//! batch crosses the bus as 8-bit crops (27 KB a face) instead of fp32 tensors (221 KB), and
//! [`Gpu::download`] brings its outputs into an [`OutputBatch`].

use crate::reference::{FaceBox, CROP};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, LaunchConfig,
    PinnedHostSlice, PushKernelArg,
};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use half::f16;
use std::sync::Arc;
use std::time::{Duration, Instant};

const KERNELS: &str = include_str!("kernels.cu");

/// The kernels `kernels.cu` defines, each loaded by [`Gpu::open`].
pub const KERNEL_NAMES: [&str; 6] = [
    "crop_face",
    "face_tensor",
    "face_input_f32",
    "paste",
    "compose",
    "rgba_to_i420",
];

/// The kernels compiled by NVRTC to PTX for `arch` (e.g. `compute_90`), with `--fmad=false`
/// (each kernel's arithmetic that of its CPU reference). Needs NVRTC (`libnvrtc.so`), not a
/// GPU: the tests compile them here, where there is none.
pub fn kernels_ptx(arch: &str) -> Result<String, GpuError> {
    // SAFETY: only looks for the library.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(GpuError::NoNvrtc);
    }
    let opts = CompileOptions {
        fmad: Some(false),
        options: vec![format!("--gpu-architecture={arch}")],
        ..Default::default()
    };
    compile_ptx_with_opts(KERNELS, opts)
        .map(|ptx| ptx.to_src())
        .map_err(|e| GpuError::Compile(e.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    #[error("no NVIDIA driver: libcuda.so.1 was not found (install the NVIDIA driver, or use device = \"cpu\")")]
    NoDriver,
    #[error("NVRTC (libnvrtc.so) was not found: put the CUDA runtime libraries on LD_LIBRARY_PATH (README, 'GPU')")]
    NoNvrtc,
    #[error("CUDA: {0}")]
    Driver(String),
    #[error("the kernels did not compile: {0}")]
    Compile(String),
}

pub(crate) fn driver(e: cudarc::driver::DriverError) -> GpuError {
    GpuError::Driver(e.to_string())
}

/// An opened GPU with the kernels loaded.
pub struct Gpu {
    pub(crate) stream: Arc<CudaStream>,
    crop: CudaFunction,
    face: CudaFunction,
    face_f32: CudaFunction,
    paste: CudaFunction,
    compose: CudaFunction,
    i420: CudaFunction,
    /// The card's name, e.g. "NVIDIA H200".
    pub name: String,
    /// What the kernels were compiled for, e.g. "compute_90".
    pub arch: String,
}

/// Room for one batch's crops, page-locked on the host and on the GPU, made once per batch
/// size ([`Gpu::crop_batch`]): crops are written straight into it, and cross the bus in one
/// DMA with no staging copy and no allocation per batch.
pub struct CropBatch {
    pub(crate) host: PinnedHostSlice<u8>,
    pub(crate) device: CudaSlice<u8>,
}

impl CropBatch {
    /// How many crops it holds.
    pub fn faces(&self) -> usize {
        self.host.len() / (CROP * CROP * 3)
    }

    /// The bytes of its first `n` crops; `None` for none, an error for more than it holds.
    pub(crate) fn bytes_of(&self, n: usize) -> Result<Option<usize>, GpuError> {
        if n > self.faces() {
            return Err(GpuError::Driver(format!(
                "{n} crops do not fit a batch of {}",
                self.faces()
            )));
        }
        Ok((n > 0).then_some(n * CROP * CROP * 3))
    }

    /// The host side, `faces()` crops of `CROP`² RGB one after the other, to write crops into
    /// (write-combined memory: fast to write in order, slow to read).
    pub fn host_mut(&mut self) -> Result<&mut [u8], GpuError> {
        self.host.as_mut_slice().map_err(driver)
    }
}

/// Room for one batch's model outputs in page-locked host memory ([`Gpu::output_batch`]):
/// outputs left on the GPU by the model cross the bus into it in one DMA, and are read there.
/// Ordinary (cached) page-locked memory, not write-combined: the CPU reads it.
pub struct OutputBatch {
    pub(crate) host: PinnedHostSlice<f32>,
    /// `host`'s memory, for reads that cannot fail once a download has landed.
    values: *const f32,
    /// How many values the last download wrote.
    pub(crate) filled: usize,
}

// SAFETY: `values` points into `host`, which is Send and Sync and lives as long; it is only
// written through `&mut self` (`Gpu::download`) and read through `&self`.
unsafe impl Send for OutputBatch {}
unsafe impl Sync for OutputBatch {}

impl OutputBatch {
    /// How many values it has room for.
    pub fn capacity(&self) -> usize {
        self.host.len()
    }

    /// The room for a download of `values`, forgetting what the last one wrote.
    pub(crate) fn room_for(&mut self, values: usize) -> Result<&mut [f32], GpuError> {
        if values > self.capacity() {
            return Err(GpuError::Driver(format!(
                "{values} outputs do not fit room for {}",
                self.capacity()
            )));
        }
        self.filled = 0;
        let host = self.host.as_mut_slice().map_err(driver)?;
        Ok(&mut host[..values])
    }

    /// The values the last download wrote (none before the first).
    pub fn values(&self) -> &[f32] {
        // SAFETY: `values` is `host`'s memory, `filled` ≤ its length; downloads are synchronous
        // (they have landed when `download` returns) and take `&mut self`, so nothing writes
        // the memory while it is borrowed here.
        unsafe { std::slice::from_raw_parts(self.values, self.filled) }
    }
}

/// One thread per pixel in 16×16 blocks, `depth` faces deep.
fn grid(w: u32, h: u32, depth: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (w.div_ceil(16), h.div_ceil(16), depth),
        block_dim: (16, 16, 1),
        shared_mem_bytes: 0,
    }
}

impl Gpu {
    /// Opens GPU `ordinal` and compiles the kernels for it.
    pub fn open(ordinal: usize) -> Result<Gpu, GpuError> {
        // SAFETY: only looks for the libraries; nothing is called yet.
        if !unsafe { cudarc::driver::sys::is_culib_present() } {
            return Err(GpuError::NoDriver);
        }
        if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
            return Err(GpuError::NoNvrtc);
        }
        let ctx = CudaContext::new(ordinal).map_err(driver)?;
        let name = ctx.name().map_err(driver)?;
        let (major, minor) = ctx.compute_capability().map_err(driver)?;
        let own = format!("compute_{major}{minor}");
        let mut failures = Vec::new();
        let mut compiled = None;
        for arch in [own.as_str(), "compute_90", "compute_80", "compute_75"] {
            match kernels_ptx(arch) {
                Ok(ptx) => {
                    compiled = Some((Ptx::from_src(ptx), arch.to_owned()));
                    break;
                }
                Err(GpuError::Compile(why)) => failures.push(format!("{arch}: {why}")),
                Err(e) => failures.push(format!("{arch}: {e}")),
            }
        }
        let (ptx, arch) = compiled.ok_or_else(|| GpuError::Compile(failures.join("; ")))?;
        let module = ctx.load_module(ptx).map_err(driver)?;
        let function = |n: &str| module.load_function(n).map_err(driver);
        Ok(Gpu {
            stream: ctx.default_stream(),
            crop: function("crop_face")?,
            face: function("face_tensor")?,
            face_f32: function("face_input_f32")?,
            paste: function("paste")?,
            compose: function("compose")?,
            i420: function("rgba_to_i420")?,
            name,
            arch,
        })
    }

    /// Crops each box of an RGBA frame to `CROP`² RGB (one launch for all).
    pub fn crop_faces(
        &self,
        frame: &[u8],
        pitch: usize,
        boxes: &[FaceBox],
    ) -> Result<Vec<u8>, GpuError> {
        let s = &self.stream;
        let frame = s.clone_htod(frame).map_err(driver)?;
        let flat: Vec<i32> = boxes
            .iter()
            .flat_map(|b| [b.x as i32, b.y as i32, b.w as i32, b.h as i32])
            .collect();
        let boxes_d = s.clone_htod(&flat).map_err(driver)?;
        let mut out = s
            .alloc_zeros::<u8>(boxes.len() * CROP * CROP * 3)
            .map_err(driver)?;
        let pitch = pitch as i32;
        let mut launch = s.launch_builder(&self.crop);
        launch.arg(&frame).arg(&pitch).arg(&boxes_d).arg(&mut out);
        // SAFETY: the arguments match the kernel's signature and every buffer is as large
        // as the launch reads or writes.
        unsafe { launch.launch(grid(CROP as u32, CROP as u32, boxes.len() as u32)) }
            .map_err(driver)?;
        s.clone_dtoh(&out).map_err(driver)
    }

    /// The model's face inputs from `n` crops: `n × [6][CROP][CROP]` fp16.
    pub fn face_tensors(&self, crops: &[u8], n: usize) -> Result<Vec<f16>, GpuError> {
        let s = &self.stream;
        let crops = s.clone_htod(crops).map_err(driver)?;
        let mut out = s.alloc_zeros::<u16>(n * 6 * CROP * CROP).map_err(driver)?;
        let mut launch = s.launch_builder(&self.face);
        launch.arg(&crops).arg(&mut out);
        // SAFETY: as in crop_faces.
        unsafe { launch.launch(grid(CROP as u32, CROP as u32, n as u32)) }.map_err(driver)?;
        let bits = s.clone_dtoh(&out).map_err(driver)?;
        Ok(bits.into_iter().map(f16::from_bits).collect())
    }

    /// The model's fp32 face inputs from `n` crops, `n × [6][CROP][CROP]`: what
    /// [`face_inputs_into`](Self::face_inputs_into) writes, brought back to the host.
    pub fn face_inputs(&self, crops: &[u8], n: usize) -> Result<Vec<f32>, GpuError> {
        let s = &self.stream;
        let mut out = s.alloc_zeros::<f32>(n * 6 * CROP * CROP).map_err(driver)?;
        {
            let (ptr, _sync) = out.device_ptr_mut(s);
            // SAFETY: `out` is device memory of this context holding n faces' inputs.
            unsafe { self.face_inputs_into(crops, n, ptr) }?;
        }
        s.clone_dtoh(&out).map_err(driver)
    }

    /// Uploads `n` crops (`CROP`² RGB each) and writes the model's fp32 face inputs from them,
    /// `n × [6][CROP][CROP]`, to `dst`; returns once they are written. (Live batches use
    /// [`face_inputs_from`](Self::face_inputs_from), which keeps its buffers.)
    ///
    /// # Safety
    /// As [`face_inputs_from`](Self::face_inputs_from).
    unsafe fn face_inputs_into(&self, crops: &[u8], n: usize, dst: u64) -> Result<(), GpuError> {
        let len = n * CROP * CROP * 3;
        if crops.len() < len {
            return Err(GpuError::Driver(format!(
                "{n} crops need {len} bytes, got {}",
                crops.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let crops = self.stream.clone_htod(&crops[..len]).map_err(driver)?;
        // SAFETY: `crops` holds n crops; `dst` the caller vouches for.
        unsafe { self.launch_face_inputs(&crops, n, dst) }
    }

    /// Room for `faces` crops, on the host and on the GPU (see [`CropBatch`]).
    pub fn crop_batch(&self, faces: usize) -> Result<CropBatch, GpuError> {
        let len = faces.max(1) * CROP * CROP * 3;
        // SAFETY: the memory is only read after crops are written into it (`host_mut`).
        let host = unsafe { self.stream.context().alloc_pinned::<u8>(len) }.map_err(driver)?;
        let device = self.stream.alloc_zeros::<u8>(len).map_err(driver)?;
        Ok(CropBatch { host, device })
    }

    /// Room for `values` f32 outputs on the host (see [`OutputBatch`]).
    pub fn output_batch(&self, values: usize) -> Result<OutputBatch, GpuError> {
        // SAFETY: the memory is only read after a download has written it (`download`).
        // Flags 0: page-locked and cached, for reading.
        let host = unsafe {
            self.stream
                .context()
                .alloc_pinned_with_flags::<f32>(values.max(1), 0)
        }
        .map_err(driver)?;
        let values = host.as_ptr().map_err(driver)?;
        Ok(OutputBatch {
            host,
            values,
            filled: 0,
        })
    }

    /// Copies `values` f32 from `src` on the GPU into `into`, and returns once they are there
    /// ([`OutputBatch::values`]).
    ///
    /// # Safety
    /// `src` must be device memory on this GPU's primary context (where ONNX Runtime's CUDA
    /// provider allocates too) holding at least `values` f32, with every write to it complete
    /// (ONNX Runtime's run has returned).
    pub unsafe fn download(
        &self,
        src: u64,
        values: usize,
        into: &mut OutputBatch,
    ) -> Result<(), GpuError> {
        self.stream.context().bind_to_thread().map_err(driver)?;
        let host = into.room_for(values)?;
        // SAFETY: `host` has room for `values`; `src` the caller vouches for. The copy is
        // synchronous: it has landed when this returns.
        unsafe { cudarc::driver::result::memcpy_dtoh_sync(host, src) }.map_err(driver)?;
        into.filled = values;
        Ok(())
    }

    /// Uploads the first `n` crops of `batch` and writes the model's fp32 face inputs from them,
    /// `n × [6][CROP][CROP]`, to `dst`; returns once they are written.
    ///
    /// # Safety
    /// `dst` must be device memory on this GPU's primary context (where ONNX Runtime's CUDA
    /// provider allocates too) with room for `n × 6 × CROP²` f32, not in use by another stream
    /// until this returns.
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
        let host = batch.host.as_slice().map_err(driver)?;
        // Page-locked: the driver copies it by DMA, with no staging copy of its own.
        s.memcpy_htod(&host[..len], &mut batch.device.slice_mut(..len))
            .map_err(driver)?;
        // SAFETY: `batch.device` holds n crops; `dst` the caller vouches for.
        unsafe { self.launch_face_inputs(&batch.device, n, dst) }
    }

    /// Writes the face inputs of `n` crops already on the GPU to `dst`, and waits for them.
    ///
    /// # Safety
    /// `crops` must hold `n` crops; `dst` as in [`face_inputs_from`](Self::face_inputs_from).
    unsafe fn launch_face_inputs(
        &self,
        crops: &CudaSlice<u8>,
        n: usize,
        dst: u64,
    ) -> Result<(), GpuError> {
        // SAFETY: as this function's.
        unsafe { self.queue_face_inputs(&self.stream, crops, n, dst) }?;
        // The model runs on ONNX Runtime's own stream: the input must be complete before.
        self.stream.synchronize().map_err(driver)
    }

    /// Queues on `stream` the kernel writing the face inputs of `n` crops already on the GPU
    /// to `dst`.
    ///
    /// # Safety
    /// `crops` must hold `n` crops; `dst` must be device memory of this GPU with room for
    /// `n × 6 × CROP²` f32, not in use by other work until the kernel is done.
    pub(crate) unsafe fn queue_face_inputs(
        &self,
        stream: &Arc<CudaStream>,
        crops: &CudaSlice<u8>,
        n: usize,
        dst: u64,
    ) -> Result<(), GpuError> {
        let mut launch = stream.launch_builder(&self.face_f32);
        launch.arg(crops).arg(&dst);
        // SAFETY: the kernel reads n crops from `crops` and writes n inputs to `dst`, both
        // vouched for by the caller.
        unsafe { launch.launch(grid(CROP as u32, CROP as u32, n as u32)) }.map_err(driver)?;
        Ok(())
    }

    /// Blends the model's `output` into box `b` of an RGBA frame through `mask`.
    pub fn paste(
        &self,
        frame: &mut [u8],
        pitch: usize,
        b: FaceBox,
        output: &[f16],
        mask: &[u8],
    ) -> Result<(), GpuError> {
        let s = &self.stream;
        let mut frame_d = s.clone_htod(&*frame).map_err(driver)?;
        let bits: Vec<u16> = output.iter().map(|v| v.to_bits()).collect();
        let output = s.clone_htod(&bits).map_err(driver)?;
        let mask = s.clone_htod(mask).map_err(driver)?;
        let (pitch, x, y, w, h) = (pitch as i32, b.x as i32, b.y as i32, b.w as i32, b.h as i32);
        let mut launch = s.launch_builder(&self.paste);
        launch
            .arg(&mut frame_d)
            .arg(&pitch)
            .arg(&x)
            .arg(&y)
            .arg(&w)
            .arg(&h)
            .arg(&output)
            .arg(&mask);
        // SAFETY: as in crop_faces.
        unsafe { launch.launch(grid(b.w, b.h, 1)) }.map_err(driver)?;
        s.memcpy_dtoh(&frame_d, frame).map_err(driver)
    }

    /// A live output frame ([`crate::frames`]): the RGBA `frame` (`pitch` bytes a row) with the
    /// model's fp32 `output` blended into box `b` through `mask`, made on the GPU and brought
    /// back.
    pub fn compose(
        &self,
        frame: &[u8],
        pitch: usize,
        b: FaceBox,
        output: &[f32],
        mask: &[u8],
    ) -> Result<Vec<u8>, GpuError> {
        let s = &self.stream;
        let height = frame.len() / pitch.max(1);
        let len = pitch * height;
        let src = s.clone_htod(&frame[..len]).map_err(driver)?;
        let output = s.clone_htod(output).map_err(driver)?;
        let mask = s.clone_htod(mask).map_err(driver)?;
        let mut dst = s.alloc_zeros::<u8>(len).map_err(driver)?;
        {
            let (output, _recorded) = output.device_ptr(s);
            // SAFETY: every buffer was made above at the size the kernel reads or writes.
            unsafe { self.queue_compose(s, &src, &mask, &mut dst, pitch, height, b, output) }?;
        }
        s.clone_dtoh(&dst).map_err(driver)
    }

    /// Queues on `stream` the `compose` kernel: `frame` with the output at `output` blended
    /// into `face` through `mask`, written to `dst`.
    ///
    /// # Safety
    /// `frame` and `dst` must hold `pitch × height` bytes, `mask` `CROP²`, the box must lie
    /// inside the frame, and `output` must hold one frame's output (`3 × CROP²` f32), written
    /// before on `stream`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) unsafe fn queue_compose(
        &self,
        stream: &Arc<CudaStream>,
        frame: &CudaSlice<u8>,
        mask: &CudaSlice<u8>,
        dst: &mut CudaSlice<u8>,
        pitch: usize,
        height: usize,
        face: FaceBox,
        output: u64,
    ) -> Result<(), GpuError> {
        let (p, h) = (pitch as i32, height as i32);
        let (x, y, w, bh) = (face.x as i32, face.y as i32, face.w as i32, face.h as i32);
        let mut launch = stream.launch_builder(&self.compose);
        launch
            .arg(frame)
            .arg(dst)
            .arg(&p)
            .arg(&h)
            .arg(&x)
            .arg(&y)
            .arg(&w)
            .arg(&bh)
            .arg(&output)
            .arg(mask);
        // SAFETY: the caller's promises cover every pointer the kernel reads and writes.
        unsafe { launch.launch(grid((pitch / 4) as u32, height as u32, 1)) }.map_err(driver)?;
        Ok(())
    }

    /// Converts a `w`×`h` RGBA frame to I420 (what a CPU encoder takes after one download).
    pub fn rgba_to_i420(
        &self,
        frame: &[u8],
        pitch: usize,
        w: usize,
        h: usize,
    ) -> Result<Vec<u8>, GpuError> {
        let s = &self.stream;
        let frame = s.clone_htod(frame).map_err(driver)?;
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut out = s.alloc_zeros::<u8>(w * h + 2 * cw * ch).map_err(driver)?;
        let (p, wi, hi) = (pitch as i32, w as i32, h as i32);
        let mut launch = s.launch_builder(&self.i420);
        launch.arg(&frame).arg(&p).arg(&wi).arg(&hi).arg(&mut out);
        // SAFETY: as in crop_faces.
        unsafe { launch.launch(grid(cw as u32, ch as u32, 1)) }.map_err(driver)?;
        s.clone_dtoh(&out).map_err(driver)
    }

    /// Times crop → face tensor → paste for `faces` faces on a frame resident on the GPU,
    /// `rounds` times after a warm-up: the median time of one round.
    pub fn time_frame_kernels(
        &self,
        frame: &[u8],
        pitch: usize,
        b: FaceBox,
        faces: usize,
        rounds: usize,
    ) -> Result<Duration, GpuError> {
        let s = &self.stream;
        let mut frame_d = s.clone_htod(frame).map_err(driver)?;
        let flat: Vec<i32> = (0..faces)
            .flat_map(|_| [b.x as i32, b.y as i32, b.w as i32, b.h as i32])
            .collect();
        let boxes = s.clone_htod(&flat).map_err(driver)?;
        let mut crops = s
            .alloc_zeros::<u8>(faces * CROP * CROP * 3)
            .map_err(driver)?;
        let mut tensors = s
            .alloc_zeros::<u16>(faces * 6 * CROP * CROP)
            .map_err(driver)?;
        let mask = s.clone_htod(&vec![200u8; CROP * CROP]).map_err(driver)?;
        let (p, x, y, w, h) = (pitch as i32, b.x as i32, b.y as i32, b.w as i32, b.h as i32);
        let mut times = Vec::with_capacity(rounds);
        for round in 0..rounds + 5 {
            let t0 = Instant::now();
            let mut l = s.launch_builder(&self.crop);
            l.arg(&frame_d).arg(&p).arg(&boxes).arg(&mut crops);
            // SAFETY: as in crop_faces.
            unsafe { l.launch(grid(CROP as u32, CROP as u32, faces as u32)) }.map_err(driver)?;
            let mut l = s.launch_builder(&self.face);
            l.arg(&crops).arg(&mut tensors);
            // SAFETY: as in crop_faces.
            unsafe { l.launch(grid(CROP as u32, CROP as u32, faces as u32)) }.map_err(driver)?;
            // The model would run here; its output's size is the tensor's first half.
            for _ in 0..faces {
                let mut l = s.launch_builder(&self.paste);
                l.arg(&mut frame_d)
                    .arg(&p)
                    .arg(&x)
                    .arg(&y)
                    .arg(&w)
                    .arg(&h)
                    .arg(&tensors)
                    .arg(&mask);
                // SAFETY: as in crop_faces; the tensor holds more than one output plane set.
                unsafe { l.launch(grid(b.w, b.h, 1)) }.map_err(driver)?;
            }
            s.synchronize().map_err(driver)?;
            // (Converting the frame for the encoder is timed apart: it is per frame, not per
            // face.)
            if round >= 5 {
                times.push(t0.elapsed());
            }
        }
        times.sort();
        Ok(times[times.len() / 2])
    }

    /// Times the I420 conversion of a `w`×`h` frame resident on the GPU, and its download to
    /// host memory: the medians of `rounds`.
    pub fn time_i420(
        &self,
        frame: &[u8],
        pitch: usize,
        w: usize,
        h: usize,
        rounds: usize,
    ) -> Result<(Duration, Duration), GpuError> {
        let s = &self.stream;
        let frame_d = s.clone_htod(frame).map_err(driver)?;
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut out = s.alloc_zeros::<u8>(w * h + 2 * cw * ch).map_err(driver)?;
        let mut host = vec![0u8; w * h + 2 * cw * ch];
        let (p, wi, hi) = (pitch as i32, w as i32, h as i32);
        let (mut convert, mut download) = (Vec::new(), Vec::new());
        for round in 0..rounds + 5 {
            let t0 = Instant::now();
            let mut l = s.launch_builder(&self.i420);
            l.arg(&frame_d).arg(&p).arg(&wi).arg(&hi).arg(&mut out);
            // SAFETY: as in crop_faces.
            unsafe { l.launch(grid(cw as u32, ch as u32, 1)) }.map_err(driver)?;
            s.synchronize().map_err(driver)?;
            let t1 = Instant::now();
            s.memcpy_dtoh(&out, &mut host).map_err(driver)?;
            s.synchronize().map_err(driver)?;
            if round >= 5 {
                convert.push(t1 - t0);
                download.push(t1.elapsed());
            }
        }
        convert.sort();
        download.sort();
        Ok((convert[rounds / 2], download[rounds / 2]))
    }
}
