//! The Wav2Lip engine: a Wav2Lip-class ONNX model repaints the lower face of real photo or video
//! avatars, driven by the mel spectrogram of the audio around each frame.
//!
//! Per frame, exactly as the reference inference does: the 16 mel frames (0.2 s) starting at
//! `int(i · 80 / fps)`, and the 96×96 face crop twice — once with its lower half zeroed (what
//! to draw) and once whole (who to draw) — in BGR, scaled to 0..1. The model's 96×96 output is
//! resized back into the face box and blended through a feathered mouth-and-jaw mask, where the
//! reference pastes the whole box; pixels outside the box are never touched.
//!
//! The face box comes from the frame's face meta. When the frame is a registered avatar's
//! (`facecast/avatar-frame`), its crop and mask come from the avatar cache; any other video
//! with a face meta works too, cropped on the fly with a mask placed from the box.

use super::frame_pool::FramePool;
use super::{EngineError, FrameJob, FrameOutput, LipSyncEngine, PendingFrame, Rendered};
use crate::mel_window::MelWindows;
use crate::wav2lip_batcher::{PendingInference, SharedModel, Waited};
use crate::wav2lip_frames::{Answer, ComposeJob};
use crate::wav2lip_model::ModelError;
use facecast_avatars::cache::CachedAvatar;
use facecast_avatars::crop::{bilinear_taps, crop_face, default_landmarks, mouth_mask};
use facecast_avatars::store::AvatarStore;
use facecast_avatars::CROP_SIZE;
use facecast_common::{FaceInfo, Rect};
use std::sync::{Arc, Mutex};

/// Normalised mel values at or below this are silence (digital silence gives exactly −4).
const SILENT_MEL: f32 = -3.99;

/// An avatar frame (its index, or `u32::MAX` when unknown) and face box.
type SilentKey = (u32, Rect);
/// Silent outputs on their way into the engine's cache, from frames that were pending.
#[derive(Default)]
struct SilentInbox {
    done: Vec<(SilentKey, Arc<Vec<f32>>)>,
    /// Silent frames shown late (repeated) whose answer had not come: it still fills the
    /// cache when it does, or an idle avatar on a busy GPU would be inferred every frame.
    late: Vec<(SilentKey, PendingInference)>,
}

pub struct Wav2LipEngine {
    model: Arc<SharedModel>,
    store: &'static AvatarStore,
    mel: MelWindows,
    /// The registered avatar the frames come from, once looked up.
    avatar: Option<Arc<CachedAvatar>>,
    /// The model's output for a silent window, per avatar frame: silence always gives the same
    /// closed mouth, so an idle photo avatar costs no inference after its first frame.
    silent: std::collections::HashMap<SilentKey, Arc<Vec<f32>>>,
    /// Silent outputs computed by pending frames, moved into `silent` on the next frame.
    silent_inbox: Arc<Mutex<SilentInbox>>,
    /// The mask last placed from a box alone (a video that is not a registered avatar): its box
    /// rarely moves between frames, and placing a mask costs more than a copy.
    box_mask: Option<(Rect, Arc<[u8]>)>,
    /// The memory of the output frames.
    frames: FramePool,
    /// Whether a frame without a face meta has been reported.
    pub warned_no_face: bool,
    /// Set when a frame had no face meta (the element warns once).
    pub no_face_frames: u64,
}

impl Wav2LipEngine {
    pub fn new(model: Arc<SharedModel>, store: &'static AvatarStore) -> Self {
        Self {
            model,
            store,
            mel: MelWindows::default(),
            avatar: None,
            silent: Default::default(),
            silent_inbox: Default::default(),
            box_mask: None,
            frames: FramePool::default(),
            warned_no_face: false,
            no_face_frames: 0,
        }
    }

    /// The frame's face crop and blend mask: cached for registered avatars, else computed.
    /// A registered avatar's frame comes with its index in the avatar.
    fn crop_and_mask(
        &mut self,
        info: &FaceInfo,
        frame: &[u8],
        stride: usize,
    ) -> (Vec<u8>, Arc<[u8]>, Option<u32>) {
        if let Some(source) = &info.source {
            if self
                .avatar
                .as_ref()
                .is_none_or(|a| a.info.name != source.avatar)
            {
                self.avatar = self.store.get(&source.avatar).ok();
                self.silent.clear();
            }
            if let Some(avatar) = &self.avatar {
                if let Some(face) = avatar.faces.get(source.index as usize) {
                    if face.face == info.face {
                        return (face.crop.clone(), face.mask.clone(), Some(source.index));
                    }
                }
            }
        }
        let rect = info.face;
        let mask = match &self.box_mask {
            Some((placed, mask)) if *placed == rect => mask.clone(),
            _ => {
                let mask: Arc<[u8]> = mouth_mask(rect, &default_landmarks(rect)).into();
                self.box_mask = Some((rect, mask.clone()));
                mask
            }
        };
        (crop_face(frame, stride, rect), mask, None)
    }
}

/// The output frame composed on the GPU, as a buffer with `source`'s metas (the face meta
/// among them), timestamps and flags; its memory goes back to the GPU's pool when freed.
fn composed(
    frame: impl AsRef<[u8]> + AsMut<[u8]> + Send + 'static,
    source: &gst::BufferRef,
) -> Result<gst::Buffer, EngineError> {
    let mut buffer = gst::Buffer::from_mut_slice(frame);
    source
        .copy_into(
            buffer.get_mut().expect("a new buffer is ours alone"),
            gst::BufferCopyFlags::FLAGS
                | gst::BufferCopyFlags::TIMESTAMPS
                | gst::BufferCopyFlags::META,
            ..,
        )
        .map_err(|_| EngineError::Map)?;
    Ok(buffer)
}

/// Blends the model's output (planar BGR 0..1, 96×96) into `rect` of an RGBA frame through
/// `mask`, both resized to the box bilinearly. (The CPU path; `facecast-gpu`'s `paste` kernel
/// is checked against it.)
pub fn paste(frame: &mut [u8], stride: usize, rect: Rect, output: &[f32], mask: &[u8]) {
    let n = CROP_SIZE;
    let plane_len = n * n;
    // Where each column and row of the box samples the 96×96 grid, worked out once per box
    // rather than per pixel and channel, with the same arithmetic, so the result is the same to
    // the bit (the GPU kernel's reference is checked against this function).
    let (columns, rows) = (
        bilinear_taps(rect.w as usize, n),
        bilinear_taps(rect.h as usize, n),
    );
    // Mask rows that are zero throughout: a box row that samples only those is left as it is.
    let blank: Vec<bool> = mask.chunks(n).map(|r| r.iter().all(|&m| m == 0)).collect();
    // Bilinear sampling is separable: each grid row is first resized across to the box's
    // width (the mask and the three output planes, side by side), once, when a box row first
    // needs it. A box row then blends two of those. The operations are those of sampling
    // each pixel on its own, in the same order, so the result is the same to the bit.
    let width = columns.len();
    let mut across = vec![0f32; n * 4 * width];
    let mut resized = vec![false; n];
    let mut resize_row = |r: usize, across: &mut [f32]| {
        if std::mem::replace(&mut resized[r], true) {
            return;
        }
        let out = &mut across[r * 4 * width..(r + 1) * 4 * width];
        let source = |plane: usize, i: usize| match plane {
            0 => mask[r * n + i] as f32,
            // Output planes are B, G, R; the frame is RGBA, so channel 1 + c reads 2 − c.
            p => output[(3 - p) * plane_len + r * n + i],
        };
        for plane in 0..4 {
            for (x, &(x0, x1, wx)) in columns.iter().enumerate() {
                out[plane * width + x] = source(plane, x0) * (1.0 - wx) + source(plane, x1) * wx;
            }
        }
    };
    for (y, &(y0, y1, wy)) in rows.iter().enumerate() {
        if blank[y0] && blank[y1] {
            continue;
        }
        resize_row(y0, &mut across);
        resize_row(y1, &mut across);
        let (top, bottom) = (
            &across[y0 * 4 * width..(y0 + 1) * 4 * width],
            &across[y1 * 4 * width..(y1 + 1) * 4 * width],
        );
        let row = (rect.y as usize + y) * stride + rect.x as usize * 4;
        let pixels = frame[row..row + width * 4].chunks_exact_mut(4);
        fn planes(side: &[f32], plane: usize) -> &[f32] {
            let width = side.len() / 4;
            &side[plane * width..(plane + 1) * width]
        }
        let lerp = |a: f32, b: f32| a * (1.0 - wy) + b * wy;
        let (mask_top, mask_bottom) = (planes(top, 0), planes(bottom, 0));
        let colour = |c: usize| planes(top, 1 + c).iter().zip(planes(bottom, 1 + c));
        for ((((px, (&mt, &mb)), r), g), b) in pixels
            .zip(mask_top.iter().zip(mask_bottom))
            .zip(colour(0))
            .zip(colour(1))
            .zip(colour(2))
        {
            // Where alpha is 0 the blend gives the old value back exactly, so the loop needs
            // no branch for unmasked pixels.
            let alpha = lerp(mt, mb) / 255.0;
            for (old, (&above, &below)) in px.iter_mut().zip([r, g, b]) {
                let model = lerp(above, below).clamp(0.0, 1.0) * 255.0;
                let value = *old as f32;
                // In 0..=255: adding ½ and truncating rounds as `round` does, without libm.
                *old = (value + (model - value) * alpha + 0.5) as u8;
            }
        }
    }
}

impl LipSyncEngine for Wav2LipEngine {
    fn name(&self) -> &'static str {
        "wav2lip"
    }

    fn lookahead(&self) -> gst::ClockTime {
        // The window reaches (15 · 200 + 400) / 16000 s = 212.5 ms past the frame's start,
        // plus the resampler's taps.
        gst::ClockTime::from_mseconds(215)
    }

    fn history(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(50)
    }

    fn reset(&mut self) {
        // A flush: the kept mel rows belong to the audio before it.
        self.mel = MelWindows::default();
    }

    fn max_in_flight(&self) -> usize {
        self.model.key().max_batch.max(1)
    }

    fn render(&mut self, job: &FrameJob) -> Result<Rendered, EngineError> {
        let Some(info) = FaceInfo::from_buffer(job.video) else {
            self.no_face_frames += 1;
            let buffer = job.video.copy_deep().map_err(|_| EngineError::Map)?;
            return Ok(Rendered::Done(Box::new(FrameOutput {
                buffer,
                mouth: None,
            })));
        };
        let (width, height) = (job.video_info.width(), job.video_info.height());
        let rect = info.face.clipped(width, height);
        if rect.w < 2 || rect.h < 2 {
            let buffer = job.video.copy_deep().map_err(|_| EngineError::Map)?;
            return Ok(Rendered::Done(Box::new(FrameOutput {
                buffer,
                mouth: None,
            })));
        }
        let stride = job.video_info.stride()[0] as usize;
        let (crop, mask, registered) = {
            let map = job.video.map_readable().map_err(|_| EngineError::Map)?;
            if map.len() < stride * height as usize {
                return Err(EngineError::Size(width, height));
            }
            let mut lookup = info.clone();
            lookup.face = rect;
            self.crop_and_mask(&lookup, map.as_slice(), stride)
        };
        {
            let inbox = self.silent_inbox.clone();
            let mut inbox = inbox.lock().unwrap();
            for (key, output) in inbox.done.drain(..) {
                self.silent.insert(key, output);
            }
            inbox
                .late
                .retain(|(key, pending)| match pending.try_answer() {
                    None => true,
                    Some(Ok(answer)) => {
                        self.silent.insert(*key, Arc::new(answer.output.to_vec()));
                        false
                    }
                    Some(Err(_)) => false,
                });
        }
        let mel = self.mel.window(job.audio, job.origin, job.start);
        // Silence (every mel value at its floor) on a frame already seen silent: reuse.
        let silent_key = mel
            .iter()
            .all(|&v| v <= SILENT_MEL)
            .then(|| (info.source.as_ref().map_or(u32::MAX, |s| s.index), rect));
        let known = silent_key.and_then(|k| self.silent.get(&k).cloned());
        if let Some(output) = known {
            let mut buffer = self.frames.copy(job.video)?;
            {
                let b = buffer.make_mut();
                let mut map = b.map_writable().map_err(|_| EngineError::Map)?;
                paste(map.as_mut_slice(), stride, rect, &output, &mask);
            }
            return Ok(Rendered::Done(Box::new(FrameOutput {
                buffer,
                mouth: None,
            })));
        }
        // A speaking frame past its deadline is not worth running; a silent one is (its
        // answer fills the idle cache, late or not).
        let expires = if silent_key.is_some() {
            None
        } else {
            job.deadline
        };
        // A registered avatar's frame is composed on the GPU where the model's worker can: the
        // frame is copied and blended here only if the answer comes without it.
        let avatar = self.avatar.as_ref().filter(|_| self.model.frames_on_gpu);
        let compose = registered.zip(avatar).map(|(index, avatar)| {
            let (frame, rows) = (job.video.to_owned(), height as usize);
            ComposeJob::avatar_frame(avatar, index, rect, frame, stride, rows, mask.clone())
        });
        let source = job.video.to_owned();
        let mut frames = self.frames.clone();
        let pending = self.model.submit(mel, crop, expires, compose)?;
        let remember = silent_key.map(|k| (k, self.silent_inbox.clone()));
        Ok(Rendered::Pending(PendingFrame::new(move |deadline| {
            let Answer { output, frame } = match pending.wait(deadline) {
                Waited::Answer(answer) => answer?,
                Waited::Late(pending) => {
                    if let Some((key, inbox)) = remember {
                        inbox.lock().unwrap().late.push((key, pending));
                    }
                    return Err(ModelError::Late.into());
                }
            };
            if let Some((key, inbox)) = remember {
                inbox
                    .lock()
                    .unwrap()
                    .done
                    .push((key, Arc::new(output.to_vec())));
            }
            // (A frame with bytes past its rows is made here, whole.)
            let buffer = match frame.filter(|f| f.as_ref().len() == source.size()) {
                Some(frame) => composed(frame, &source)?,
                None => {
                    let mut buffer = frames.copy(&source)?;
                    {
                        let b = buffer.make_mut();
                        let mut map = b.map_writable().map_err(|_| EngineError::Map)?;
                        paste(map.as_mut_slice(), stride, rect, &output, &mask);
                    }
                    buffer
                }
            };
            Ok(FrameOutput {
                buffer,
                mouth: None,
            })
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_made_on_the_gpu_keeps_its_sources_timestamps_and_face() {
        gst::init().unwrap();
        let mut source = gst::Buffer::from_mut_slice(vec![1u8; 16]);
        let face = FaceInfo {
            face: Rect::new(1, 1, 2, 2),
            mouth: Rect::new(1, 2, 2, 1),
            pose: None,
            source: None,
        };
        {
            let b = source.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(40));
            b.set_duration(gst::ClockTime::from_mseconds(40));
            face.attach(b);
        }
        let made = composed(vec![7u8; 16], &source).unwrap();
        assert_eq!(made.map_readable().unwrap().as_slice(), &[7u8; 16]);
        assert_eq!(made.pts(), source.pts());
        assert_eq!(made.duration(), source.duration());
        assert_eq!(
            FaceInfo::from_buffer(&made).map(|f| f.face),
            Some(face.face)
        );
    }

    #[test]
    fn paste_touches_only_the_masked_box() {
        let (w, h) = (64usize, 64usize);
        let mut frame = vec![100u8; w * h * 4];
        let rect = Rect::new(16, 16, 32, 32);
        let output = vec![1.0f32; 3 * CROP_SIZE * CROP_SIZE];
        let mut mask = vec![0u8; CROP_SIZE * CROP_SIZE];
        mask[CROP_SIZE * 48..].fill(255);
        paste(&mut frame, w * 4, rect, &output, &mask);
        let px = |x: usize, y: usize| frame[(y * w + x) * 4];
        assert_eq!(px(0, 0), 100);
        assert_eq!(px(20, 20), 100, "upper box half unmasked");
        assert_eq!(px(30, 44), 255, "lower box half replaced");
        assert_eq!(px(30, 50), 100, "below the box untouched");
        assert_eq!(frame[(44 * w + 30) * 4 + 3], 100, "alpha untouched");
    }
}
