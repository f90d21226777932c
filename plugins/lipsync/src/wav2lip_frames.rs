//! Output frames made on the GPU ([`facecast_gpu::frames`]), as the batch worker sees them:
//! what a session sends with a frame of a registered avatar so that the worker composes the
//! whole output frame there ([`ComposeJob`]), and what a frame's answer brings back
//! ([`Answer`]).
//!
//! A frame is composed on the GPU only where its batch was queued on a lane with face inputs
//! built there (the outputs are already on the GPU); anywhere else, or when composing fails
//! (say, no room for the avatar's frame), its answer has no frame and the session blends the
//! output into a copy of its frame on the CPU, as before.

use crate::wav2lip_model::OUT_LEN;
use crate::wav2lip_output::ModelOutput;
use facecast_avatars::cache::CachedAvatar;
use facecast_common::Rect;
use facecast_gpu::cuda::GpuError;
use facecast_gpu::frames::{Composer, FrameKey, PinnedFrame};
use facecast_gpu::reference::FaceBox;
use std::sync::Arc;

/// A frame to compose on the GPU: a registered avatar's frame (`key`), its pixels (uploaded
/// the first time the key is seen, then kept there), and its blend mask.
pub struct ComposeJob {
    pub key: FrameKey,
    /// The avatar frame, RGBA, `pitch` bytes a row, `height` rows.
    pub frame: gst::Buffer,
    pub pitch: usize,
    pub height: usize,
    pub mask: Arc<[u8]>,
}

impl ComposeJob {
    /// Frame `index` of the registered `avatar`, its face at `face` blended through `mask`:
    /// `frame` (RGBA, `pitch` bytes a row, `height` rows) is uploaded the first time.
    pub fn avatar_frame(
        avatar: &CachedAvatar,
        index: u32,
        face: Rect,
        frame: gst::Buffer,
        pitch: usize,
        height: usize,
        mask: Arc<[u8]>,
    ) -> Self {
        Self {
            key: FrameKey {
                avatar: avatar.info.name.as_str().into(),
                registered: avatar.info.created_unix,
                index,
                face: face_box(face),
            },
            frame,
            pitch,
            height,
            mask,
        }
    }
}

/// A face box as the GPU kernels take it.
pub fn face_box(r: Rect) -> FaceBox {
    FaceBox {
        x: r.x,
        y: r.y,
        w: r.w,
        h: r.h,
    }
}

/// A frame's answer: the model's output, and the finished frame when it was composed on
/// the GPU.
pub struct Answer {
    pub output: ModelOutput,
    pub frame: Option<PinnedFrame>,
}

/// Queues the composition of each frame of a batch that has a job, after the model's outputs
/// (`outputs`: the batch's output tensor on the GPU, frame after frame); gives each frame's
/// composed frame, `None` where it has no job or its composition failed, with the first
/// failure.
///
/// # Safety
/// `outputs` must hold `jobs.len()` frames' outputs on the composer's GPU, written by work
/// queued on its lane, and not rewritten until a mark made after this call is done.
pub(crate) unsafe fn compose_batch(
    composer: &mut Composer,
    jobs: &[Option<&ComposeJob>],
    outputs: u64,
) -> (Vec<Option<PinnedFrame>>, Option<GpuError>) {
    let mut failure = None;
    let frames = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| {
            let output = outputs + (i * OUT_LEN * std::mem::size_of::<f32>()) as u64;
            // SAFETY: frame `i`'s output, within the caller's promise.
            match unsafe { compose_one(composer, (*job)?, output) } {
                Ok(frame) => Some(frame),
                Err(e) => {
                    failure.get_or_insert(e);
                    None
                }
            }
        })
        .collect();
    (frames, failure)
}

/// Queues one job's frame, its model output at `output` ([`Composer::compose`]).
///
/// # Safety
/// As [`Composer::compose`] for `output`.
unsafe fn compose_one(
    composer: &mut Composer,
    job: &ComposeJob,
    output: u64,
) -> Result<PinnedFrame, GpuError> {
    let map = job
        .frame
        .map_readable()
        .map_err(|_| GpuError::Driver("the avatar frame cannot be read".into()))?;
    let len = job.pitch * job.height;
    let pixels = map.as_slice().get(..len).ok_or_else(|| {
        GpuError::Driver(format!(
            "the avatar frame has {} bytes, not {len}",
            map.len()
        ))
    })?;
    // SAFETY: the caller's promise.
    unsafe { composer.compose(&job.key, pixels, job.pitch, &job.mask, output) }
}
