//! Where the face and mouth are in a frame, and (for the parametric avatar) how it is posed.
//!
//! Carried as a standard `GstVideoRegionOfInterestMeta` of type `face`, so generic elements
//! (overlays, encoders with ROI support) understand the face box; facecast's own details ride in
//! the meta's parameter structures:
//! - `facecast/mouth` `{x, y, w, h}`: the region lip-sync may repaint (mouth, lips and jaw line).
//! - `facecast/avatar-pose`: present when the frame was drawn by the parametric renderer; holds
//!   the blendshape weights (ARKit names; absent means 0) and head pose it was drawn with, so
//!   `lipsync` can redraw the same frame with a speaking mouth instead of pasting pixels.
//! - `facecast/avatar-frame` `{avatar, index}`: present when the frame is frame `index` of a
//!   registered avatar, so `lipsync` can take its cached face crop and blend mask instead of
//!   computing them again.

use crate::blendshapes::{Blendshape, BlendshapeWeights};
use gst_video::VideoRegionOfInterestMeta;

pub const FACE_ROI_TYPE: &str = "face";
pub const MOUTH_PARAM: &str = "facecast/mouth";
pub const POSE_PARAM: &str = "facecast/avatar-pose";
pub const AVATAR_FRAME_PARAM: &str = "facecast/avatar-frame";

/// Which registered avatar frame a buffer shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvatarFrameRef {
    pub avatar: String,
    pub index: u32,
}

/// A rectangle in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn new(x: u32, y: u32, w: u32, h: u32) -> Self {
        Self { x, y, w, h }
    }

    /// Clips the rectangle to a `width` × `height` frame.
    pub fn clipped(self, width: u32, height: u32) -> Rect {
        let x = self.x.min(width);
        let y = self.y.min(height);
        Rect {
            x,
            y,
            w: self.w.min(width - x),
            h: self.h.min(height - y),
        }
    }
}

/// The head pose and expression the parametric renderer drew a frame with.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AvatarPose {
    pub weights: BlendshapeWeights,
    /// Head rotation in radians (yaw: turn, pitch: nod, roll: tilt).
    pub head_yaw: f32,
    pub head_pitch: f32,
    pub head_roll: f32,
    /// Head translation as a fraction of the frame size.
    pub head_x: f32,
    pub head_y: f32,
    /// Breathing phase, 0 (exhaled) ..= 1 (inhaled).
    pub breath: f32,
}

/// Everything the face meta says about one frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FaceInfo {
    pub face: Rect,
    pub mouth: Rect,
    pub pose: Option<AvatarPose>,
    pub source: Option<AvatarFrameRef>,
}

impl FaceInfo {
    /// Attaches this information to `buffer` as a `face` region-of-interest meta.
    pub fn attach(&self, buffer: &mut gst::BufferRef) {
        let f = self.face;
        let mut meta = VideoRegionOfInterestMeta::add(buffer, FACE_ROI_TYPE, (f.x, f.y, f.w, f.h));
        let m = self.mouth;
        meta.add_param(
            gst::Structure::builder(MOUTH_PARAM)
                .field("x", m.x)
                .field("y", m.y)
                .field("w", m.w)
                .field("h", m.h)
                .build(),
        );
        if let Some(pose) = &self.pose {
            let mut s = gst::Structure::builder(POSE_PARAM)
                .field("head-yaw", pose.head_yaw)
                .field("head-pitch", pose.head_pitch)
                .field("head-roll", pose.head_roll)
                .field("head-x", pose.head_x)
                .field("head-y", pose.head_y)
                .field("breath", pose.breath);
            for (name, w) in pose.weights.iter_named() {
                s = s.field(name, w);
            }
            meta.add_param(s.build());
        }
        if let Some(source) = &self.source {
            meta.add_param(
                gst::Structure::builder(AVATAR_FRAME_PARAM)
                    .field("avatar", source.avatar.as_str())
                    .field("index", source.index)
                    .build(),
            );
        }
    }

    /// Reads the first `face` region of `buffer`, if any.
    pub fn from_buffer(buffer: &gst::BufferRef) -> Option<FaceInfo> {
        let meta = buffer
            .iter_meta::<VideoRegionOfInterestMeta>()
            .find(|m| m.roi_type() == FACE_ROI_TYPE)?;
        let (x, y, w, h) = meta.rect();
        let face = Rect::new(x, y, w, h);
        let mouth = meta
            .param(MOUTH_PARAM)
            .and_then(|s| {
                Some(Rect::new(
                    s.get("x").ok()?,
                    s.get("y").ok()?,
                    s.get("w").ok()?,
                    s.get("h").ok()?,
                ))
            })
            .unwrap_or(face);
        let pose = meta.param(POSE_PARAM).map(|s| {
            let f = |name: &str| s.get::<f32>(name).unwrap_or(0.0);
            let mut weights = BlendshapeWeights::default();
            for b in Blendshape::ALL {
                weights[b] = f(b.name());
            }
            AvatarPose {
                weights,
                head_yaw: f("head-yaw"),
                head_pitch: f("head-pitch"),
                head_roll: f("head-roll"),
                head_x: f("head-x"),
                head_y: f("head-y"),
                breath: f("breath"),
            }
        });
        let source = meta.param(AVATAR_FRAME_PARAM).and_then(|s| {
            Some(AvatarFrameRef {
                avatar: s.get::<String>("avatar").ok()?,
                index: s.get("index").ok()?,
            })
        });
        Some(FaceInfo {
            face,
            mouth,
            pose,
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn face_info_round_trips_through_a_buffer() {
        gst::init().unwrap();
        let mut pose = AvatarPose {
            head_roll: 0.05,
            breath: 0.5,
            ..Default::default()
        };
        pose.weights[Blendshape::EyeBlinkLeft] = 0.8;
        let info = FaceInfo {
            face: Rect::new(100, 60, 300, 380),
            mouth: Rect::new(190, 300, 130, 110),
            pose: Some(pose),
            source: Some(AvatarFrameRef {
                avatar: "anna".into(),
                index: 7,
            }),
        };
        let mut buffer = gst::Buffer::with_size(16).unwrap();
        info.attach(buffer.get_mut().unwrap());
        assert_eq!(FaceInfo::from_buffer(&buffer).unwrap(), info);
        assert!(FaceInfo::from_buffer(&gst::Buffer::new()).is_none());
    }

    #[test]
    fn rect_clips_to_frame() {
        assert_eq!(
            Rect::new(500, 10, 100, 600).clipped(512, 512),
            Rect::new(500, 10, 12, 502)
        );
    }
}
