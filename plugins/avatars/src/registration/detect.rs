//! Face detection with YuNet (libfacedetection), an ONNX model run through `ort`.
//!
//! YuNet is small (~300 kB), Apache-2.0, fast on a CPU (a few ms per frame), and gives the five
//! landmarks we place the blend mask with. The dynamic-size export takes raw BGR pixels 0..255
//! whose height and width are multiples of 32; each of its three strides (8, 16, 32) gives one
//! candidate per grid cell: class and objectness scores, a box relative to the cell, and
//! landmarks. The decoding below follows the model's documentation (`models/README.md` of the
//! test assets).

use facecast_onnx::{runtime, session_builder, Device, RuntimeError};
use ort::session::Session;
use ort::value::TensorRef;
use std::path::{Path, PathBuf};

/// File name of the detector in a models folder.
pub const YUNET_FILE: &str = "yunet_n_dynamic.onnx";
/// Frames are scaled down (never up) so their longer side is at most this before detection.
const MAX_SIDE: u32 = 640;
const STRIDES: [u32; 3] = [8, 16, 32];
const SCORE_THRESHOLD: f32 = 0.6;
const NMS_IOU: f32 = 0.45;

/// A face the detector found, in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Box corners (x1, y1, x2, y2).
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    /// Right eye, left eye, nose tip, right and left mouth corner.
    pub landmarks: [[f32; 2]; 5],
    pub score: f32,
}

impl Detection {
    pub fn area(&self) -> f32 {
        (self.x2 - self.x1).max(0.0) * (self.y2 - self.y1).max(0.0)
    }

    fn iou(&self, other: &Detection) -> f32 {
        let w = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let h = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = w * h;
        inter / (self.area() + other.area() - inter).max(f32::EPSILON)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("face detector not found at {0}: download yunet_n_dynamic.onnx from https://github.com/ShiqiYu/libfacedetection.train/tree/master/onnx into the models folder (or give its path)")]
    NotFound(PathBuf),
    #[error("cannot load face detector {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("face detection failed: {0}")]
    Run(String),
    #[error("frame of {width}x{height} with {len} bytes is not RGBA")]
    BadFrame { width: u32, height: u32, len: usize },
}

pub struct FaceDetector {
    session: Session,
    name: String,
}

impl FaceDetector {
    /// Loads YuNet from `path` (ONNX Runtime from `ORT_DYLIB_PATH` unless already loaded).
    pub fn load(path: &Path) -> Result<Self, DetectError> {
        if !path.is_file() {
            return Err(DetectError::NotFound(path.to_owned()));
        }
        let env = runtime(None)?;
        let load = |e: ort::Error| DetectError::Load {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let session = session_builder(env, Device::Cpu, 1)
            .map_err(load)?
            .commit_from_file(path)
            .map_err(load)?;
        for name in ["cls_8", "obj_8", "bbox_8", "kps_8"] {
            if !session.outputs().iter().any(|o| o.name() == name) {
                return Err(DetectError::Load {
                    path: path.to_owned(),
                    reason: format!("not a YuNet model: it has no output '{name}'"),
                });
            }
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self { session, name })
    }

    /// The model's file name, recorded in the avatar cache.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// All faces in an RGBA frame, best first.
    pub fn detect(
        &mut self,
        rgba: &[u8],
        width: u32,
        height: u32,
    ) -> Result<Vec<Detection>, DetectError> {
        if width == 0 || height == 0 || rgba.len() != width as usize * height as usize * 4 {
            return Err(DetectError::BadFrame {
                width,
                height,
                len: rgba.len(),
            });
        }
        let scale = (MAX_SIDE as f32 / width.max(height) as f32).min(1.0);
        let sw = ((width as f32 * scale).round() as u32).max(1);
        let sh = ((height as f32 * scale).round() as u32).max(1);
        // Letterbox at the top-left: pixel coordinates only need dividing by `scale` afterwards.
        let pw = sw.div_ceil(32) * 32;
        let ph = sh.div_ceil(32) * 32;
        let input = bgr_planes(rgba, width, height, sw, sh, pw, ph);
        let run = |e: ort::Error| DetectError::Run(e.to_string());
        let tensor =
            TensorRef::from_array_view(([1usize, 3, ph as usize, pw as usize], &input[..]))
                .map_err(run)?;
        let outputs = self
            .session
            .run(ort::inputs!["input" => tensor])
            .map_err(run)?;

        let mut found = Vec::new();
        for stride in STRIDES {
            let get = |kind: &str| -> Result<&[f32], DetectError> {
                let name = format!("{kind}_{stride}");
                let value = outputs
                    .get(name.as_str())
                    .ok_or_else(|| DetectError::Run(format!("no output {name}")))?;
                let (_, data) = value.try_extract_tensor::<f32>().map_err(run)?;
                Ok(data)
            };
            let (cls, obj, bbox, kps) = (get("cls")?, get("obj")?, get("bbox")?, get("kps")?);
            let cols = (pw / stride) as usize;
            let rows = (ph / stride) as usize;
            let cells = cols * rows;
            if cls.len() < cells
                || obj.len() < cells
                || bbox.len() < cells * 4
                || kps.len() < cells * 10
            {
                return Err(DetectError::Run(format!(
                    "stride {stride}: outputs smaller than its {cells} cells"
                )));
            }
            let s = stride as f32;
            for cell in 0..cells {
                let score = cls[cell].clamp(0.0, 1.0) * obj[cell].clamp(0.0, 1.0);
                if score <= SCORE_THRESHOLD {
                    continue;
                }
                let ax = (cell % cols) as f32 * s;
                let ay = (cell / cols) as f32 * s;
                let b = &bbox[cell * 4..cell * 4 + 4];
                let (cx, cy) = (b[0] * s + ax, b[1] * s + ay);
                let (w, h) = (b[2].exp() * s, b[3].exp() * s);
                let k = &kps[cell * 10..cell * 10 + 10];
                let mut landmarks = [[0.0; 2]; 5];
                for (i, l) in landmarks.iter_mut().enumerate() {
                    *l = [(k[2 * i] * s + ax) / scale, (k[2 * i + 1] * s + ay) / scale];
                }
                found.push(Detection {
                    x1: (cx - w / 2.0) / scale,
                    y1: (cy - h / 2.0) / scale,
                    x2: (cx + w / 2.0) / scale,
                    y2: (cy + h / 2.0) / scale,
                    landmarks,
                    score,
                });
            }
        }
        Ok(non_maximum_suppression(found))
    }
}

/// Keeps the best-scoring box of every cluster of overlapping ones.
fn non_maximum_suppression(mut found: Vec<Detection>) -> Vec<Detection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in found {
        if kept.iter().all(|k| k.iou(&d) <= NMS_IOU) {
            kept.push(d);
        }
    }
    kept
}

/// Resizes an RGBA frame to `sw`×`sh` (bilinear) into planar BGR 0..255 of `pw`×`ph`,
/// zero-padded on the right and bottom.
fn bgr_planes(
    rgba: &[u8],
    width: u32,
    height: u32,
    sw: u32,
    sh: u32,
    pw: u32,
    ph: u32,
) -> Vec<f32> {
    let plane = (pw * ph) as usize;
    let mut out = vec![0f32; plane * 3];
    let fx = width as f32 / sw as f32;
    let fy = height as f32 / sh as f32;
    for y in 0..sh {
        let sy = ((y as f32 + 0.5) * fy - 0.5).clamp(0.0, (height - 1) as f32);
        let y0 = sy.floor() as u32;
        let y1 = (y0 + 1).min(height - 1);
        let wy = sy - y0 as f32;
        for x in 0..sw {
            let sx = ((x as f32 + 0.5) * fx - 0.5).clamp(0.0, (width - 1) as f32);
            let x0 = sx.floor() as u32;
            let x1 = (x0 + 1).min(width - 1);
            let wx = sx - x0 as f32;
            let px = |xx: u32, yy: u32, c: usize| rgba[((yy * width + xx) * 4) as usize + c] as f32;
            let o = (y * pw + x) as usize;
            // BGR: plane 0 takes red's opposite, channel 2 of RGBA.
            for (p, c) in [(0, 2), (1, 1), (2, 0)] {
                let top = px(x0, y0, c) * (1.0 - wx) + px(x1, y0, c) * wx;
                let bottom = px(x0, y1, c) * (1.0 - wx) + px(x1, y1, c) * wx;
                out[p * plane + o] = top * (1.0 - wy) + bottom * wy;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x1: f32, score: f32) -> Detection {
        Detection {
            x1,
            y1: 0.0,
            x2: x1 + 10.0,
            y2: 10.0,
            landmarks: [[0.0; 2]; 5],
            score,
        }
    }

    #[test]
    fn suppression_keeps_the_best_of_overlapping_boxes() {
        let kept = non_maximum_suppression(vec![det(0.0, 0.7), det(1.0, 0.9), det(50.0, 0.8)]);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0].score, 0.9);
        assert_eq!(kept[1].x1, 50.0);
    }

    #[test]
    fn planes_are_bgr_and_padded() {
        // A 2x1 frame: red then blue pixel, scaled 1:1 into a 4x2 letterbox.
        let rgba = [255, 0, 0, 255, 0, 0, 255, 255];
        let p = bgr_planes(&rgba, 2, 1, 2, 1, 4, 2);
        assert_eq!(&p[0..4], &[0.0, 255.0, 0.0, 0.0]); // blue plane
        assert_eq!(&p[16..20], &[255.0, 0.0, 0.0, 0.0]); // red plane
        assert!(p[4..8].iter().all(|&v| v == 0.0));
    }
}
