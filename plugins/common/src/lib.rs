//! The vocabulary shared by facecast's GStreamer elements.
//!
//! Elements are separate plugins (so `gst-launch-1.0` can compose them), yet they cooperate:
//! `speechsynth` tells `lipsync` which phoneme sounds when, `avatarsrc` tells `lipsync` where the
//! face and mouth are and how the parametric face is posed, and anyone can tell the avatar which
//! emotion to show. Everything they exchange is defined here, once:
//!
//! - [`blendshapes`]: the 52 ARKit blendshape names, the expression vocabulary of every renderer.
//! - [`viseme`]: phonemes (IPA, as espeak-ng emits them) → visemes → mouth blendshapes.
//! - [`events`]: the serialized custom events that travel in-band with the audio.
//! - [`face_meta`]: the per-frame face/mouth region meta (a standard `GstVideoRegionOfInterestMeta`).
//! - [`emotion`]: emotions, their expressions, and the damping that eases changes in.

pub mod blendshapes;
pub mod emotion;
pub mod events;
pub mod face_meta;
pub mod viseme;

pub use blendshapes::{Blendshape, BlendshapeWeights};
pub use emotion::{Emotion, ExpressionBlender};
pub use events::{EmotionEvent, PhonemeEvent, TranscriptEvent, UserSpeechEvent};
pub use face_meta::{AvatarFrameRef, AvatarPose, FaceInfo, Rect};
pub use viseme::Viseme;
