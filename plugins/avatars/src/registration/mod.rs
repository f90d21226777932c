//! Avatar registration: a photo or video loop becomes a cached, ready-to-talk avatar.
//!
//! Done once per avatar, so no session ever waits for face detection: decode the source
//! ([`decode`]), find the face in every frame ([`detect`], YuNet), smooth the boxes over
//! neighbouring frames (detections jitter by a few pixels, which would make the pasted mouth
//! shimmer), pad them (Wav2Lip's default adds 10 px at the bottom so the chin is inside), and
//! store per frame the box, landmarks, 96×96 crop and feathered mouth mask with the frames
//! themselves in one cache file ([`crate::cache`]).

pub mod decode;
pub mod detect;

use crate::cache::{self, CacheError};
use crate::crop::{crop_face, default_landmarks, mouth_mask};
use crate::store::{validate_name, AvatarStore, StoreError};
use crate::{AvatarInfo, FaceFrame, SourceKind};
use decode::{decode, DecodeError};
use detect::{DetectError, Detection, FaceDetector};
use facecast_common::Rect;
use std::path::{Path, PathBuf};

/// Wav2Lip's default padding (top, bottom, left, right).
pub const DEFAULT_PADDING: [i32; 4] = [0, 10, 0, 0];
/// Boxes are averaged over this many neighbouring frames (Wav2Lip uses 5).
const SMOOTH_WINDOW: usize = 5;
pub const DEFAULT_MAX_HEIGHT: u32 = 720;
/// 60 s at 25 fps: longer loops cost memory and disk and gain nothing for an idle loop.
pub const DEFAULT_MAX_FRAMES: usize = 1500;

#[derive(Debug, Clone)]
pub struct RegisterOptions {
    pub name: String,
    pub source: PathBuf,
    /// The YuNet model file (ignored when `face_box` is given).
    pub detector: PathBuf,
    /// A box to use instead of detection (x, y, w, h), for images where detection fails.
    pub face_box: Option<Rect>,
    pub padding: [i32; 4],
    pub max_height: u32,
    pub max_frames: usize,
    /// Replace an avatar of the same name.
    pub replace: bool,
}

impl RegisterOptions {
    pub fn new(name: &str, source: &Path, detector: &Path) -> Self {
        Self {
            name: name.to_owned(),
            source: source.to_owned(),
            detector: detector.to_owned(),
            face_box: None,
            padding: DEFAULT_PADDING,
            max_height: DEFAULT_MAX_HEIGHT,
            max_frames: DEFAULT_MAX_FRAMES,
            replace: false,
        }
    }
}

/// Where registration is, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Decoding,
    Detecting { total: usize },
    Writing,
}

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("an avatar named '{0}' already exists (delete it first, or replace it)")]
    Exists(String),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("no face found in {0}: use a photo with one clearly visible frontal face, or give the face box by hand (--face-box x,y,w,h)")]
    NoFace(String),
    #[error("face box {x},{y} {w}x{h} does not fit in the {width}x{height} frame")]
    BadBox {
        x: u32,
        y: u32,
        w: u32,
        h: u32,
        width: u32,
        height: u32,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// What a registration produced.
#[derive(Debug, Clone)]
pub struct Registration {
    pub info: AvatarInfo,
    pub frames: usize,
    pub path: PathBuf,
    pub bytes: u64,
    /// The decoder that read the source (see [`Decoded::decoder`](decode::Decoded)).
    pub decoder: String,
    /// Things the user should know (several faces, frames without a face).
    pub warnings: Vec<String>,
}

/// Registers `options.source` as avatar `options.name` in `store`.
pub fn register(
    store: &AvatarStore,
    options: &RegisterOptions,
    progress: &mut dyn FnMut(Stage, usize),
) -> Result<Registration, RegisterError> {
    validate_name(&options.name)?;
    let path = store.path_of(&options.name)?;
    if path.exists() && !options.replace {
        return Err(RegisterError::Exists(options.name.clone()));
    }
    let source = options.source.display().to_string();
    let decoded = decode(
        &options.source,
        options.max_height,
        options.max_frames,
        &mut |n| progress(Stage::Decoding, n),
    )?;
    let (width, height) = (decoded.width, decoded.height);
    let count = decoded.frames.len();
    let mut warnings = Vec::new();

    // One detection (or none) per frame.
    let (detections, detector_name) = match options.face_box {
        Some(b) => {
            if b.w < 8 || b.h < 8 || b.x + b.w > width || b.y + b.h > height {
                return Err(RegisterError::BadBox {
                    x: b.x,
                    y: b.y,
                    w: b.w,
                    h: b.h,
                    width,
                    height,
                });
            }
            let d = Detection {
                x1: b.x as f32,
                y1: b.y as f32,
                x2: (b.x + b.w) as f32,
                y2: (b.y + b.h) as f32,
                landmarks: default_landmarks(b),
                score: 1.0,
            };
            (vec![Some(d); count], "manual".to_owned())
        }
        None => {
            let mut detector = FaceDetector::load(&options.detector)?;
            let mut found = Vec::with_capacity(count);
            let mut crowded = 0;
            for (i, frame) in decoded.frames.iter().enumerate() {
                let faces = detector.detect(frame, width, height)?;
                if faces.len() > 1 {
                    crowded += 1;
                }
                // Several faces: the largest is the speaker (the others are in the background).
                found.push(
                    faces
                        .into_iter()
                        .max_by(|a, b| a.area().total_cmp(&b.area())),
                );
                progress(Stage::Detecting { total: count }, i + 1);
            }
            if crowded > 0 {
                warnings.push(format!(
                    "{crowded} of {count} frames show more than one face: the largest was taken"
                ));
            }
            (found, detector.name().to_owned())
        }
    };
    let missing = detections.iter().filter(|d| d.is_none()).count();
    if missing == count {
        return Err(RegisterError::NoFace(source));
    }
    if missing > 0 {
        warnings.push(format!(
            "no face in {missing} of {count} frames: their box was taken from the nearest frame with one"
        ));
    }
    let filled = fill_gaps(&detections);
    let smoothed = smooth(&filled, SMOOTH_WINDOW);

    progress(Stage::Writing, 0);
    let faces: Vec<FaceFrame> = smoothed
        .iter()
        .zip(&decoded.frames)
        .map(|(d, frame)| {
            let face = padded_box(d, options.padding, width, height);
            FaceFrame {
                face,
                landmarks: d.landmarks,
                score: d.score,
                crop: crop_face(frame, width as usize * 4, face),
                mask: mouth_mask(face, &d.landmarks).into(),
            }
        })
        .collect();
    let info = AvatarInfo {
        name: options.name.clone(),
        kind: if count == 1 {
            SourceKind::Image
        } else {
            SourceKind::Video
        },
        width,
        height,
        fps: decoded.fps,
        padding: options.padding,
        detector: detector_name,
        created_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let bytes = cache::write(&path, &info, &faces, &decoded.frames)?;
    store.invalidate(&options.name);
    Ok(Registration {
        info,
        frames: count,
        path,
        bytes,
        decoder: decoded.decoder,
        warnings,
    })
}

/// Frames without a face take the detection of the nearest frame that has one.
fn fill_gaps(found: &[Option<Detection>]) -> Vec<Detection> {
    (0..found.len())
        .map(|i| {
            (0..found.len())
                .flat_map(|d| [i.checked_sub(d), Some(i + d)])
                .flatten()
                .find_map(|j| found.get(j).copied().flatten())
                .expect("at least one frame has a face")
        })
        .collect()
}

/// Averages boxes and landmarks over a centred window of neighbouring frames.
fn smooth(found: &[Detection], window: usize) -> Vec<Detection> {
    let half = window / 2;
    (0..found.len())
        .map(|i| {
            let lo = i.saturating_sub(half);
            let hi = (i + half + 1).min(found.len());
            let span = &found[lo..hi];
            let n = span.len() as f32;
            let mean = |f: &dyn Fn(&Detection) -> f32| span.iter().map(f).sum::<f32>() / n;
            let mut landmarks = [[0.0; 2]; 5];
            for (k, l) in landmarks.iter_mut().enumerate() {
                *l = [mean(&|d| d.landmarks[k][0]), mean(&|d| d.landmarks[k][1])];
            }
            Detection {
                x1: mean(&|d| d.x1),
                y1: mean(&|d| d.y1),
                x2: mean(&|d| d.x2),
                y2: mean(&|d| d.y2),
                landmarks,
                score: found[i].score,
            }
        })
        .collect()
}

/// The detection's box grown by `padding` (top, bottom, left, right) and clipped to the frame.
fn padded_box(d: &Detection, padding: [i32; 4], width: u32, height: u32) -> Rect {
    let [top, bottom, left, right] = padding.map(|p| p as f32);
    let x1 = (d.x1 - left).round().clamp(0.0, width as f32 - 1.0) as u32;
    let y1 = (d.y1 - top).round().clamp(0.0, height as f32 - 1.0) as u32;
    let x2 = (d.x2 + right).round().clamp(x1 as f32 + 1.0, width as f32) as u32;
    let y2 = (d.y2 + bottom)
        .round()
        .clamp(y1 as f32 + 1.0, height as f32) as u32;
    Rect::new(x1, y1, x2 - x1, y2 - y1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32) -> Detection {
        Detection {
            x1: x,
            y1: 10.0,
            x2: x + 50.0,
            y2: 70.0,
            landmarks: [[x, 0.0]; 5],
            score: 0.9,
        }
    }

    #[test]
    fn gaps_take_the_nearest_face() {
        let filled = fill_gaps(&[None, Some(det(10.0)), None, None, Some(det(40.0))]);
        let xs: Vec<f32> = filled.iter().map(|d| d.x1).collect();
        assert_eq!(xs, [10.0, 10.0, 10.0, 40.0, 40.0]);
    }

    #[test]
    fn smoothing_averages_neighbours() {
        let s = smooth(&[det(0.0), det(10.0), det(20.0), det(30.0), det(40.0)], 5);
        assert_eq!(s[2].x1, 20.0);
        assert_eq!(s[0].x1, 10.0); // (0 + 10 + 20) / 3
        assert_eq!(s[2].landmarks[0][0], 20.0);
    }

    #[test]
    fn padding_grows_and_clips() {
        let r = padded_box(&det(10.0), [0, 10, 0, 0], 100, 75);
        assert_eq!(r, Rect::new(10, 10, 50, 65));
    }
}
