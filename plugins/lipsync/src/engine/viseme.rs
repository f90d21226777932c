//! The viseme engine: mouth blendshapes from phoneme events (exact timing) or, without them,
//! from the audio itself; drawn by redrawing the parametric avatar with that mouth.

use super::frame_pool::FramePool;
use super::{EngineError, FrameJob, FrameOutput, LipSyncEngine, Rendered};
use crate::audio_features::AudioMouthEstimator;
use crate::mouth::{coarticulated_target, MouthDynamics, LOOKAHEAD};
use facecast_common::{AvatarPose, FaceInfo, Viseme};
use gstfacecastavatar::render::Renderer;

/// Audio analysed per frame: the frame plus a little on each side.
const ANALYSIS_MARGIN: gst::ClockTime = gst::ClockTime::from_mseconds(8);

pub struct VisemeEngine {
    dynamics: MouthDynamics,
    /// Whether the stream announces phonemes (speech from `speechsynth`). Until it does, the
    /// mouth follows the sound of each frame and needs no co-articulation look-ahead: a live
    /// voice (drive mode) is shown about 70 ms sooner.
    phonemes_seen: bool,
    estimator: Option<AudioMouthEstimator>,
    renderer: Option<Renderer>,
    samples: Vec<f32>,
    /// The memory of the output frames (the renderer paints every pixel of them).
    frames: FramePool,
}

impl Default for VisemeEngine {
    fn default() -> Self {
        Self::new()
    }
}

impl VisemeEngine {
    pub fn new() -> Self {
        Self {
            dynamics: MouthDynamics::default(),
            phonemes_seen: false,
            estimator: None,
            renderer: None,
            samples: Vec::new(),
            frames: FramePool::default(),
        }
    }

    fn mouth_target(&mut self, job: &FrameJob) -> facecast_common::BlendshapeWeights {
        // Aim at the middle of the frame: that is the instant the viewer sees.
        let mid = job.start + job.duration / 2;
        if job.phonemes.announced() {
            self.phonemes_seen = true;
            return coarticulated_target(job.phonemes, mid);
        }
        let rate = job.audio.rate();
        let estimator = match &mut self.estimator {
            Some(e) if e.rate() == rate => e,
            slot => slot.insert(AudioMouthEstimator::new(rate)),
        };
        job.audio.window(
            job.start.saturating_sub(ANALYSIS_MARGIN),
            job.start + job.duration + ANALYSIS_MARGIN,
            &mut self.samples,
        );
        estimator.estimate(&self.samples, job.duration.seconds_f32())
    }
}

impl LipSyncEngine for VisemeEngine {
    fn name(&self) -> &'static str {
        "viseme"
    }

    fn lookahead(&self) -> gst::ClockTime {
        if self.phonemes_seen {
            LOOKAHEAD.max(ANALYSIS_MARGIN)
        } else {
            ANALYSIS_MARGIN
        }
    }

    fn max_lookahead(&self) -> gst::ClockTime {
        LOOKAHEAD.max(ANALYSIS_MARGIN)
    }

    fn history(&self) -> gst::ClockTime {
        gst::ClockTime::from_mseconds(100)
    }

    fn reset(&mut self) {
        self.dynamics.reset();
    }

    fn render(&mut self, job: &FrameJob) -> Result<Rendered, EngineError> {
        self.draw(job).map(|f| Rendered::Done(Box::new(f)))
    }
}

impl VisemeEngine {
    fn draw(&mut self, job: &FrameJob) -> Result<FrameOutput, EngineError> {
        let target = self.mouth_target(job);
        // Between announced phonemes the sound has stopped: the mouth goes to rest.
        let mid = job.start + job.duration / 2;
        let resting = job.phonemes.announced() && job.phonemes.at(mid) == Viseme::Sil;
        let mouth = *self
            .dynamics
            .step_in(&target, job.duration.seconds_f32(), resting);

        let info = FaceInfo::from_buffer(job.video);
        let Some(base_pose) = info.as_ref().and_then(|i| i.pose) else {
            // Not drawn by the parametric renderer: this engine cannot repaint it.
            let buffer = job.video.copy_deep().map_err(|_| EngineError::Map)?;
            return Ok(FrameOutput {
                buffer,
                mouth: Some(mouth),
            });
        };

        let mut pose = AvatarPose { ..base_pose };
        pose.weights.add_scaled(job.expression, 1.0);
        pose.weights.set_speech_from(&mouth);

        let (width, height) = (job.video_info.width(), job.video_info.height());
        let renderer = match &mut self.renderer {
            Some(r) if r.width() == width && r.height() == height => r,
            slot => {
                slot.insert(Renderer::new(width, height).ok_or(EngineError::Size(width, height))?)
            }
        };
        let size = job.video_info.size();
        let mut buffer = self.frames.acquire(size)?;
        {
            let buffer = buffer.get_mut().unwrap();
            let stride = job.video_info.stride()[0] as usize;
            let mut map = buffer.map_writable().map_err(|_| EngineError::Map)?;
            if !renderer.render_into(&pose, map.as_mut_slice(), stride) {
                return Err(EngineError::Size(width, height));
            }
            drop(map);
            renderer.face_info(&pose).attach(buffer);
        }
        Ok(FrameOutput {
            buffer,
            mouth: Some(mouth),
        })
    }
}
