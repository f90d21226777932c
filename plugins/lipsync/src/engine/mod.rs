//! The seam between `lipsync`'s timing and the ways of making a face talk.
//!
//! `lipsync` owns time: it decides which output frame comes next, which avatar frame it starts
//! from, and which audio and phonemes surround it. An engine owns pixels: given that context it
//! returns the talking frame. The viseme engine (this crate) redraws the parametric avatar with a
//! speaking mouth ([`viseme`]); the neural engine ([`wav2lip`]) reads its mel window from
//! [`FrameJob::audio`] and repaints the face box of photo or video avatars. An engine may answer
//! a job later ([`Rendered::Pending`]): `lipsync` then submits up to
//! [`LipSyncEngine::max_in_flight`] frames before collecting the first, so a model can run them
//! as one batch.

mod frame_pool;
pub mod viseme;
pub mod wav2lip;

use crate::timeline::{AudioTimeline, PhonemeTimeline};
use facecast_common::BlendshapeWeights;
use std::time::Instant;

/// Everything an engine may use to draw one output frame.
pub struct FrameJob<'a> {
    /// Output frame number since the audio started, and that start's running time.
    pub index: u64,
    pub origin: gst::ClockTime,
    /// Running time of the output frame and its duration.
    pub start: gst::ClockTime,
    pub duration: gst::ClockTime,
    /// Live with a frame budget: the instant after which the frame is of no use (the previous
    /// one is shown instead). An engine may skip work for it after that.
    pub deadline: Option<Instant>,
    /// The audio around the frame (at least `history` before and `lookahead` after it).
    pub audio: &'a AudioTimeline,
    /// Phonemes announced in-band, if the audio came with them.
    pub phonemes: &'a PhonemeTimeline,
    /// The avatar frame to start from, with its face meta.
    pub video: &'a gst::BufferRef,
    pub video_info: &'a gst_video::VideoInfo,
    /// The emotional expression to show now (already eased).
    pub expression: &'a BlendshapeWeights,
}

/// A talking frame: its pixels, and the mouth blendshapes it shows when the engine knows them.
pub struct FrameOutput {
    pub buffer: gst::Buffer,
    pub mouth: Option<BlendshapeWeights>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot allocate a {0}-byte frame")]
    Alloc(usize),
    #[error("cannot map the video frame")]
    Map,
    #[error("cannot draw the avatar at {0}x{1}")]
    Size(u32, u32),
    #[error("{0}")]
    Model(#[from] crate::wav2lip_model::ModelError),
}

impl EngineError {
    /// The frame missed its deadline (nothing failed: it was only late).
    pub fn is_late(&self) -> bool {
        matches!(self, Self::Model(crate::wav2lip_model::ModelError::Late))
    }
}

/// A frame whose pixels are still being computed (e.g. waiting for its batch).
pub struct PendingFrame(
    Box<dyn FnOnce(Option<Instant>) -> Result<FrameOutput, EngineError> + Send>,
);

impl PendingFrame {
    /// `finish` is given the deadline (if any) by which the frame must be ready.
    pub fn new(
        finish: impl FnOnce(Option<Instant>) -> Result<FrameOutput, EngineError> + Send + 'static,
    ) -> Self {
        Self(Box::new(finish))
    }

    /// Waits for the frame and returns it.
    pub fn finish(self) -> Result<FrameOutput, EngineError> {
        (self.0)(None)
    }

    /// Waits for the frame until `deadline` at most: after it, [`EngineError::is_late`].
    pub fn finish_by(self, deadline: Option<Instant>) -> Result<FrameOutput, EngineError> {
        (self.0)(deadline)
    }
}

/// An engine's answer to a job: the frame now, or later.
pub enum Rendered {
    Done(Box<FrameOutput>),
    Pending(PendingFrame),
}

pub trait LipSyncEngine: Send {
    fn name(&self) -> &'static str;
    /// Audio needed after a frame's end before the frame can be drawn (now: it may change
    /// with what the stream carries).
    fn lookahead(&self) -> gst::ClockTime;
    /// The most `lookahead` can be: what a live pipeline must budget for.
    fn max_lookahead(&self) -> gst::ClockTime {
        self.lookahead()
    }
    /// Audio needed before a frame's start.
    fn history(&self) -> gst::ClockTime;
    /// Forgets the motion state (after a flush or a discontinuity).
    fn reset(&mut self);
    /// Frames that may be pending at once (1: every frame is finished before the next starts).
    fn max_in_flight(&self) -> usize {
        1
    }
    fn render(&mut self, job: &FrameJob) -> Result<Rendered, EngineError>;
}
