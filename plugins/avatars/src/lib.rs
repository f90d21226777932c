//! Registered avatars: a real person's photo or video loop, with its face found once.
//!
//! This is a plain library, not a GStreamer plugin: the server registers avatars and manages the
//! cache with it, and `avatarsrc` and `lipsync` read the cached frames through it.
//!
//! Registration ([`registration`]) decodes the source, finds the face in every frame and
//! writes one cache file per avatar ([`cache`]). Sessions then open the cache through the
//! process-wide [`store`] (an LRU in front of the disk) and never detect a face again:
//! `avatarsrc avatar=NAME` plays the frames, and `lipsync engine=wav2lip` reads each frame's face
//! box, 96×96 crop and blend mask from here.

pub mod cache;
pub mod crop;
pub mod player;
pub mod registration;
pub mod store;

use facecast_common::Rect;

/// Side of the square face crop the Wav2Lip family works on.
pub const CROP_SIZE: usize = 96;

/// Whether the avatar came from a still image or a video loop (videos play ping-pong).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Image,
    Video,
}

/// What is known about a registered avatar as a whole.
#[derive(Debug, Clone, PartialEq)]
pub struct AvatarInfo {
    /// The avatar's name (a file-name-safe identifier, see [`store::validate_name`]).
    pub name: String,
    pub kind: SourceKind,
    /// Frame size in pixels (the frames are stored as RGBA at this size).
    pub width: u32,
    pub height: u32,
    /// Frame rate of a video source (numerator, denominator); (0, 1) for an image.
    pub fps: (i32, i32),
    /// Padding applied to the detected box (top, bottom, left, right), in pixels.
    pub padding: [i32; 4],
    /// What found the faces, e.g. "yunet_n_dynamic.onnx" or "manual".
    pub detector: String,
    /// Seconds since the Unix epoch when the avatar was registered.
    pub created_unix: u64,
}

/// The face in one frame, as registration found it.
#[derive(Debug, Clone, PartialEq)]
pub struct FaceFrame {
    /// The (smoothed, padded, clipped) face box lip-sync repaints.
    pub face: Rect,
    /// Five landmarks in frame pixels: right eye, left eye, nose tip, right and left mouth corner.
    pub landmarks: [[f32; 2]; 5],
    /// Detector confidence (1.0 for a manual box).
    pub score: f32,
    /// The face box resized to `CROP_SIZE`², RGB, row-major (`CROP_SIZE² · 3` bytes).
    pub crop: Vec<u8>,
    /// Feathered blend mask over the crop, 0 (keep the frame) ..= 255 (take the model's output);
    /// covers the mouth and jaw (`CROP_SIZE²` bytes). Shared: every live frame of the avatar
    /// holds it until its output is blended in.
    pub mask: std::sync::Arc<[u8]>,
}
