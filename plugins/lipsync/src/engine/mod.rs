//! The seam between `lipsync`'s timing and the ways of making a face talk.
//!
//! `lipsync` owns time: it decides which output frame comes next, which avatar frame it starts
//! from, and which audio and phonemes surround it. An engine owns pixels: given that context it
//! returns the talking frame. The viseme engine (this crate) redraws the parametric avatar with a
//! speaking mouth; a neural engine (Wav2Lip-class) will take the same [`FrameJob`]s, read its mel
//! window from [`FrameJob::audio`], and may batch several jobs per inference.

pub mod viseme;

use crate::timeline::{AudioTimeline, PhonemeTimeline};
use facecast_common::BlendshapeWeights;

/// Everything an engine may use to draw one output frame.
pub struct FrameJob<'a> {
    /// Running time of the output frame and its duration.
    pub start: gst::ClockTime,
    pub duration: gst::ClockTime,
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
}

pub trait LipSyncEngine: Send {
    fn name(&self) -> &'static str;
    /// Audio needed after a frame's end before the frame can be drawn.
    fn lookahead(&self) -> gst::ClockTime;
    /// Audio needed before a frame's start.
    fn history(&self) -> gst::ClockTime;
    /// Forgets the motion state (after a flush or a discontinuity).
    fn reset(&mut self);
    fn render(&mut self, job: &FrameJob) -> Result<FrameOutput, EngineError>;
}
