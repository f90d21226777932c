//! The built-in parametric face, drawn with tiny-skia from an [`AvatarPose`].
//!
//! The face is designed on a 512 × 512 canvas ("design units") and scaled to the output size, so
//! every size draws the same face. The pose's ARKit blendshape weights move its parts: the jaw
//! and lips for speech, lids and gaze for life, brows, cheeks and mouth corners for emotion.
//! Drawing is cheap enough to redraw every frame (see `facecast bench`): `lipsync` redraws a
//! frame with the speaking mouth rather than pasting pixels, so head motion, blinks and mouth stay
//! one consistent picture.

use facecast_common::{AvatarPose, Blendshape as B, FaceInfo, Rect as FaceRect};
use tiny_skia::{
    Color, FillRule, GradientStop, LineCap, LinearGradient, Mask, Paint, Path, PathBuilder, Pixmap,
    PixmapMut, Point, RadialGradient, Shader, SpreadMode, Stroke, Transform,
};

const DESIGN: f32 = 512.0;

/// Pivot of head rotation (the base of the neck), in design units.
const NECK_PIVOT: (f32, f32) = (256.0, 430.0);
/// Resting mouth centre, in design units.
const MOUTH_CENTER: (f32, f32) = (256.0, 342.0);
const EYE_Y: f32 = 244.0;
const EYE_DX: f32 = 50.0;

fn rgb(r: u8, g: u8, b: u8) -> Color {
    Color::from_rgba8(r, g, b, 255)
}

fn rgba(r: u8, g: u8, b: u8, a: u8) -> Color {
    Color::from_rgba8(r, g, b, a)
}

fn solid(color: Color) -> Paint<'static> {
    let mut paint = Paint::default();
    paint.set_color(color);
    paint.anti_alias = true;
    paint
}

fn shaded(shader: Shader<'static>) -> Paint<'static> {
    Paint {
        shader,
        anti_alias: true,
        ..Paint::default()
    }
}

fn oval(cx: f32, cy: f32, rx: f32, ry: f32) -> Option<Path> {
    PathBuilder::from_oval(tiny_skia::Rect::from_xywh(
        cx - rx,
        cy - ry,
        2.0 * rx,
        2.0 * ry,
    )?)
}

/// Draws the parametric avatar into RGBA frames of one size.
pub struct Renderer {
    width: u32,
    height: u32,
    /// Design units → pixels, centred.
    base: Transform,
    /// The static background, drawn once and copied under every frame.
    background: Pixmap,
    /// Scratch clip mask (eye openings, mouth opening), reused across frames.
    mask: Mask,
    /// Scratch frame for outputs whose stride has padding.
    scratch: Option<Pixmap>,
}

/// Where the parts of the face are for one pose (design units), derived from the blendshapes.
struct Geometry {
    /// Head transform (pose) in design units.
    head: Transform,
    /// Feature offset from yaw/pitch (features slide over the head as it turns).
    fx: f32,
    fy: f32,
    chin_drop: f32,
}

impl Renderer {
    pub fn new(width: u32, height: u32) -> Option<Self> {
        let scale = width.min(height) as f32 / DESIGN;
        let base = Transform::from_translate(
            (width as f32 - DESIGN * scale) / 2.0,
            (height as f32 - DESIGN * scale) / 2.0,
        )
        .pre_scale(scale, scale);
        let mut background = Pixmap::new(width, height)?;
        let sky = LinearGradient::new(
            Point::from_xy(0.0, 0.0),
            Point::from_xy(0.0, height as f32),
            vec![
                GradientStop::new(0.0, rgb(214, 226, 238)),
                GradientStop::new(1.0, rgb(150, 168, 190)),
            ],
            SpreadMode::Pad,
            Transform::identity(),
        )?;
        background.fill_rect(
            tiny_skia::Rect::from_xywh(0.0, 0.0, width as f32, height as f32)?,
            &shaded(sky),
            Transform::identity(),
            None,
        );
        // A soft light behind the head gives depth.
        let glow = RadialGradient::new(
            Point::from_xy(256.0, 220.0),
            Point::from_xy(256.0, 220.0),
            260.0,
            vec![
                GradientStop::new(0.0, rgba(255, 255, 255, 90)),
                GradientStop::new(1.0, rgba(255, 255, 255, 0)),
            ],
            SpreadMode::Pad,
            Transform::identity(),
        )?;
        background.fill_path(
            &oval(256.0, 220.0, 260.0, 260.0)?,
            &shaded(glow),
            FillRule::Winding,
            base,
            None,
        );
        Some(Self {
            width,
            height,
            base,
            background,
            mask: Mask::new(width, height)?,
            scratch: None,
        })
    }

    pub fn width(&self) -> u32 {
        self.width
    }

    pub fn height(&self) -> u32 {
        self.height
    }

    fn geometry(pose: &AvatarPose) -> Geometry {
        let w = &pose.weights;
        let head = Transform::from_translate(pose.head_x * DESIGN, pose.head_y * DESIGN)
            .pre_rotate_at(pose.head_roll.to_degrees(), NECK_PIVOT.0, NECK_PIVOT.1);
        Geometry {
            head,
            fx: pose.head_yaw * 60.0,
            fy: pose.head_pitch * 45.0,
            chin_drop: w[B::JawOpen] * 26.0,
        }
    }

    /// The face box and the region speech can change (lips, jaw, chin), in pixels.
    pub fn face_info(&self, pose: &AvatarPose) -> FaceInfo {
        let g = Self::geometry(pose);
        let t = g.head.post_concat(self.base);
        let bbox = |x0: f32, y0: f32, x1: f32, y1: f32| {
            let mut pts = [
                Point::from_xy(x0, y0),
                Point::from_xy(x1, y0),
                Point::from_xy(x0, y1),
                Point::from_xy(x1, y1),
            ];
            t.map_points(&mut pts);
            let (mut lx, mut ly, mut hx, mut hy) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
            for p in pts {
                lx = lx.min(p.x);
                ly = ly.min(p.y);
                hx = hx.max(p.x);
                hy = hy.max(p.y);
            }
            let (lx, ly) = (lx.max(0.0).floor(), ly.max(0.0).floor());
            FaceRect::new(
                lx as u32,
                ly as u32,
                (hx.ceil() - lx) as u32,
                (hy.ceil() - ly) as u32,
            )
            .clipped(self.width, self.height)
        };
        FaceInfo {
            face: bbox(128.0 + g.fx * 0.3, 96.0, 384.0 + g.fx * 0.3, 412.0),
            // Lips, jaw line and chin: everything `JawOpen` and the mouth shapes move.
            mouth: bbox(
                (128.0 + g.fx * 0.3).min(176.0 + g.fx),
                236.0 + g.fy.min(0.0),
                (384.0 + g.fx * 0.3).max(336.0 + g.fx),
                424.0 + g.fy.max(0.0),
            ),
            pose: Some(*pose),
            source: None,
        }
    }

    /// Draws `pose` into `data`, an RGBA frame of this renderer's size with rows `stride` bytes
    /// apart. Returns `false` (drawing nothing) if `data` is too small.
    pub fn render_into(&mut self, pose: &AvatarPose, data: &mut [u8], stride: usize) -> bool {
        let row = self.width as usize * 4;
        if stride < row || data.len() < stride * (self.height as usize - 1) + row {
            return false;
        }
        if stride == row {
            let Some(mut pixmap) = PixmapMut::from_bytes(
                &mut data[..row * self.height as usize],
                self.width,
                self.height,
            ) else {
                return false;
            };
            self.draw(pose, &mut pixmap);
        } else {
            let mut scratch = match self.scratch.take() {
                Some(p) => p,
                None => match Pixmap::new(self.width, self.height) {
                    Some(p) => p,
                    None => return false,
                },
            };
            self.draw(pose, &mut scratch.as_mut());
            for (dst, src) in data.chunks_mut(stride).zip(scratch.data().chunks(row)) {
                dst[..row].copy_from_slice(src);
            }
            self.scratch = Some(scratch);
        }
        true
    }

    fn draw(&mut self, pose: &AvatarPose, px: &mut PixmapMut) {
        px.data_mut().copy_from_slice(self.background.data());
        let g = Self::geometry(pose);
        let w = &pose.weights;
        let base = self.base;
        let head = g.head.post_concat(base);
        // Features slide with yaw/pitch so the head seems to turn, not just shift.
        let feat = head.pre_translate(g.fx, g.fy);

        let skin = rgb(238, 196, 166);
        let skin_shadow = rgb(214, 160, 130);
        let hair = rgb(64, 42, 32);

        // Torso and neck rise and fall with the breath; they do not turn with the head.
        let breath_y = -pose.breath * 5.0;
        let torso = base.pre_translate(0.0, breath_y);
        if let Some(p) = neck_path() {
            px.fill_path(&p, &solid(skin_shadow), FillRule::Winding, torso, None);
        }
        if let Some(p) = shoulders_path() {
            px.fill_path(&p, &solid(rgb(44, 86, 110)), FillRule::Winding, torso, None);
        }
        if let Some(p) = collar_path() {
            px.fill_path(
                &p,
                &solid(rgb(236, 238, 242)),
                FillRule::Winding,
                torso,
                None,
            );
        }

        // Hair behind the head, ears, head.
        let back = head.pre_translate(g.fx * 0.2, 0.0);
        if let Some(p) = oval(256.0, 212.0, 142.0, 150.0) {
            px.fill_path(&p, &solid(hair), FillRule::Winding, back, None);
        }
        for side in [-1.0f32, 1.0] {
            let ex = 256.0 + side * (120.0 - g.fx * side * 0.25);
            if let Some(p) = oval(ex + g.fx * 0.3, 262.0, 17.0, 30.0) {
                px.fill_path(&p, &solid(skin_shadow), FillRule::Winding, head, None);
            }
        }
        if let Some(p) = head_path(g.fx * 0.3, g.chin_drop) {
            let light = RadialGradient::new(
                Point::from_xy(236.0 + g.fx, 220.0),
                Point::from_xy(236.0 + g.fx, 220.0),
                210.0,
                vec![
                    GradientStop::new(0.0, rgb(246, 208, 180)),
                    GradientStop::new(0.75, skin),
                    GradientStop::new(1.0, skin_shadow),
                ],
                SpreadMode::Pad,
                Transform::identity(),
            );
            let paint = light.map(shaded).unwrap_or_else(|| solid(skin));
            px.fill_path(&p, &paint, FillRule::Winding, head, None);
        }
        // Fringe over the forehead.
        if let Some(p) = fringe_path(g.fx * 0.5) {
            px.fill_path(&p, &solid(hair), FillRule::Winding, head, None);
        }

        // Cheeks warm up with a smile.
        let smile = (w[B::MouthSmileLeft] + w[B::MouthSmileRight]) * 0.5;
        let blush_alpha = (40.0 + 70.0 * smile.max(w[B::CheekSquintLeft])) as u8;
        for side in [-1.0f32, 1.0] {
            let cx = 256.0 + side * 72.0;
            if let Some(shader) = RadialGradient::new(
                Point::from_xy(cx, 300.0 - smile * 6.0),
                Point::from_xy(cx, 300.0 - smile * 6.0),
                34.0,
                vec![
                    GradientStop::new(0.0, rgba(232, 120, 120, blush_alpha)),
                    GradientStop::new(1.0, rgba(232, 120, 120, 0)),
                ],
                SpreadMode::Pad,
                Transform::identity(),
            ) {
                if let Some(p) = oval(cx, 300.0 - smile * 6.0, 34.0, 34.0) {
                    px.fill_path(&p, &shaded(shader), FillRule::Winding, feat, None);
                }
            }
        }

        self.draw_eyes(px, pose, feat);
        draw_brows(px, pose, feat, hair);
        draw_nose(px, pose, feat, skin_shadow);
        self.draw_mouth(px, pose, feat);
    }

    fn draw_eyes(&mut self, px: &mut PixmapMut, pose: &AvatarPose, feat: Transform) {
        let w = &pose.weights;
        // Gaze: ARKit's look-in/out are per eye; the left eye looks "in" towards the nose (+x
        // on screen, as the avatar faces us), the right eye's "in" is -x.
        let gaze_x = (w[B::EyeLookInLeft] - w[B::EyeLookOutLeft] - w[B::EyeLookInRight]
            + w[B::EyeLookOutRight])
            * 0.5;
        let gaze_y = (w[B::EyeLookDownLeft] + w[B::EyeLookDownRight]
            - w[B::EyeLookUpLeft]
            - w[B::EyeLookUpRight])
            * 0.5;
        for (side, blink, squint, wide) in [
            (
                -1.0f32,
                w[B::EyeBlinkRight],
                w[B::EyeSquintRight],
                w[B::EyeWideRight],
            ),
            (
                1.0f32,
                w[B::EyeBlinkLeft],
                w[B::EyeSquintLeft],
                w[B::EyeWideLeft],
            ),
        ] {
            let cx = 256.0 + side * EYE_DX;
            let cy = EYE_Y;
            let half_w = 23.0;
            let open = 12.5 * (1.0 - blink) * (1.0 - 0.4 * squint) * (1.0 + 0.3 * wide);
            // Lower lid rises a little with a squint.
            let lower = 8.0 * (1.0 - 0.5 * squint) * (1.0 - blink).max(0.15);
            if open > 0.8 {
                let Some(almond) = almond_path(cx, cy, half_w, open, lower) else {
                    continue;
                };
                px.fill_path(
                    &almond,
                    &solid(rgb(250, 250, 247)),
                    FillRule::Winding,
                    feat,
                    None,
                );
                self.mask.clear();
                self.mask.fill_path(&almond, FillRule::Winding, true, feat);
                let ix = cx + gaze_x * 12.0;
                let iy = cy + gaze_y * 6.0 + 1.0;
                if let Some(p) = oval(ix, iy, 10.5, 10.5) {
                    px.fill_path(
                        &p,
                        &solid(rgb(96, 66, 44)),
                        FillRule::Winding,
                        feat,
                        Some(&self.mask),
                    );
                }
                if let Some(p) = oval(ix, iy, 5.0, 5.0) {
                    px.fill_path(
                        &p,
                        &solid(rgb(22, 16, 14)),
                        FillRule::Winding,
                        feat,
                        Some(&self.mask),
                    );
                }
                if let Some(p) = oval(ix + 3.5, iy - 3.5, 2.4, 2.4) {
                    px.fill_path(
                        &p,
                        &solid(rgba(255, 255, 255, 230)),
                        FillRule::Winding,
                        feat,
                        Some(&self.mask),
                    );
                }
            }
            // Upper lash line follows the lid, whether open or shut.
            let mut pb = PathBuilder::new();
            pb.move_to(cx - half_w - 2.0, cy + 1.0);
            pb.quad_to(cx, cy - 2.0 * open.max(0.6), cx + half_w + 2.0, cy + 1.0);
            if let Some(p) = pb.finish() {
                let stroke = Stroke {
                    width: 3.2,
                    line_cap: LineCap::Round,
                    ..Stroke::default()
                };
                px.stroke_path(&p, &solid(rgb(48, 30, 24)), &stroke, feat, None);
            }
            // Lid crease.
            let mut pb = PathBuilder::new();
            pb.move_to(cx - half_w + 3.0, cy - open - 3.0);
            pb.quad_to(
                cx,
                cy - 2.0 * open - 9.0,
                cx + half_w - 2.0,
                cy - open - 3.0,
            );
            if let Some(p) = pb.finish() {
                let stroke = Stroke {
                    width: 1.6,
                    line_cap: LineCap::Round,
                    ..Stroke::default()
                };
                px.stroke_path(&p, &solid(rgba(170, 110, 90, 150)), &stroke, feat, None);
            }
        }
    }

    fn draw_mouth(&mut self, px: &mut PixmapMut, pose: &AvatarPose, feat: Transform) {
        let w = &pose.weights;
        let jaw = w[B::JawOpen];
        let funnel = w[B::MouthFunnel];
        let pucker = w[B::MouthPucker];
        let stretch = (w[B::MouthStretchLeft] + w[B::MouthStretchRight]) * 0.5;
        let close = w[B::MouthClose];
        let press = (w[B::MouthPressLeft] + w[B::MouthPressRight]) * 0.5;
        let (cx, cy) = (
            MOUTH_CENTER.0 + w[B::MouthRight] * 8.0 - w[B::MouthLeft] * 8.0,
            MOUTH_CENTER.1,
        );

        let half_w = 33.0
            * (1.0 + 0.22 * stretch - 0.38 * pucker - 0.22 * funnel
                + 0.1 * (w[B::MouthSmileLeft] + w[B::MouthSmileRight]) * 0.5);
        // Corners: up with a smile, down with a frown (per side; the avatar's left is screen right).
        let corner = |smile: f32, frown: f32| -12.0 * smile + 8.0 * frown;
        let left_y = cy + corner(w[B::MouthSmileRight], w[B::MouthFrownRight]);
        let right_y = cy + corner(w[B::MouthSmileLeft], w[B::MouthFrownLeft]);
        let (lx, rx) = (cx - half_w, cx + half_w);

        // The opening: the jaw drops the lower lip; rounding makes it taller and narrower.
        let opening = (jaw * 40.0 + funnel * 6.0) * (1.0 - close) * (1.0 - press);
        let upper_gap = opening * 0.28 + w[B::MouthUpperUpLeft].max(w[B::MouthUpperUpRight]) * 4.0;
        let lower_gap = opening * 0.72
            + w[B::MouthLowerDownLeft].max(w[B::MouthLowerDownRight]) * 5.0
            - w[B::MouthRollLower] * 3.0;
        let round = (funnel + pucker).min(1.0);
        // Inner corners pull towards the centre as the lips round.
        let inner_half = half_w * (1.0 - 0.35 * round);
        let upper_lip = 9.0 * (1.0 + 0.3 * round) * (1.0 - 0.5 * w[B::MouthRollUpper]);
        let lower_lip =
            11.0 * (1.0 + 0.3 * round) * (1.0 - 0.6 * w[B::MouthRollLower]) * (1.0 - 0.3 * press);

        let upper_inner_y = cy - upper_gap;
        let lower_inner_y = cy + lower_gap.max(0.0);

        if opening > 0.7 {
            let mut pb = PathBuilder::new();
            pb.move_to(cx - inner_half, (left_y + cy) * 0.5);
            pb.cubic_to(
                cx - inner_half * 0.5,
                upper_inner_y - round * upper_gap * 0.6,
                cx + inner_half * 0.5,
                upper_inner_y - round * upper_gap * 0.6,
                cx + inner_half,
                (right_y + cy) * 0.5,
            );
            pb.cubic_to(
                cx + inner_half * 0.6,
                lower_inner_y + lower_gap * 0.35 * (1.0 + round),
                cx - inner_half * 0.6,
                lower_inner_y + lower_gap * 0.35 * (1.0 + round),
                cx - inner_half,
                (left_y + cy) * 0.5,
            );
            pb.close();
            if let Some(inside) = pb.finish() {
                px.fill_path(
                    &inside,
                    &solid(rgb(92, 28, 34)),
                    FillRule::Winding,
                    feat,
                    None,
                );
                self.mask.clear();
                self.mask.fill_path(&inside, FillRule::Winding, true, feat);
                // Upper teeth hang from the upper lip; the tongue rests low.
                if let Some(r) = tiny_skia::Rect::from_xywh(
                    cx - inner_half,
                    upper_inner_y - 8.0,
                    inner_half * 2.0,
                    8.0 + (opening * 0.22).min(8.0),
                ) {
                    let teeth = PathBuilder::from_rect(r);
                    px.fill_path(
                        &teeth,
                        &solid(rgb(246, 244, 236)),
                        FillRule::Winding,
                        feat,
                        Some(&self.mask),
                    );
                }
                if let Some(p) = oval(
                    cx,
                    lower_inner_y + 4.0 - w[B::TongueOut] * 10.0,
                    inner_half * 0.7,
                    9.0 + w[B::TongueOut] * 6.0,
                ) {
                    px.fill_path(
                        &p,
                        &solid(rgb(200, 90, 96)),
                        FillRule::Winding,
                        feat,
                        Some(&self.mask),
                    );
                }
            }
        }

        let lip = rgb(192, 102, 100);
        // Upper lip: outer edge with a cupid's bow, inner edge along the opening.
        let mut pb = PathBuilder::new();
        pb.move_to(lx, left_y);
        pb.cubic_to(
            cx - half_w * 0.6,
            cy - upper_gap - upper_lip * 0.8,
            cx - half_w * 0.25,
            cy - upper_gap - upper_lip * 1.25,
            cx,
            cy - upper_gap - upper_lip * 0.85,
        );
        pb.cubic_to(
            cx + half_w * 0.25,
            cy - upper_gap - upper_lip * 1.25,
            cx + half_w * 0.6,
            cy - upper_gap - upper_lip * 0.8,
            rx,
            right_y,
        );
        pb.cubic_to(
            cx + inner_half * 0.5,
            upper_inner_y - round * upper_gap * 0.6 + 1.0,
            cx - inner_half * 0.5,
            upper_inner_y - round * upper_gap * 0.6 + 1.0,
            lx,
            left_y,
        );
        pb.close();
        if let Some(p) = pb.finish() {
            px.fill_path(&p, &solid(lip), FillRule::Winding, feat, None);
        }
        // Lower lip.
        let mut pb = PathBuilder::new();
        pb.move_to(lx, left_y);
        pb.cubic_to(
            cx - inner_half * 0.6,
            lower_inner_y + lower_gap.max(0.0) * 0.35 * (1.0 + round) - 1.0,
            cx + inner_half * 0.6,
            lower_inner_y + lower_gap.max(0.0) * 0.35 * (1.0 + round) - 1.0,
            rx,
            right_y,
        );
        pb.cubic_to(
            cx + half_w * 0.55,
            lower_inner_y + lower_lip * 1.45,
            cx - half_w * 0.55,
            lower_inner_y + lower_lip * 1.45,
            lx,
            left_y,
        );
        pb.close();
        if let Some(p) = pb.finish() {
            px.fill_path(
                &p,
                &solid(rgb(204, 112, 108)),
                FillRule::Winding,
                feat,
                None,
            );
        }
        // A highlight on the lower lip and the line between the lips when closed.
        if let Some(p) = oval(
            cx + 4.0,
            lower_inner_y + lower_lip * 0.55,
            half_w * 0.3,
            2.2,
        ) {
            px.fill_path(
                &p,
                &solid(rgba(255, 230, 225, 90)),
                FillRule::Winding,
                feat,
                None,
            );
        }
        if opening <= 0.7 {
            let mut pb = PathBuilder::new();
            pb.move_to(lx + 1.0, left_y);
            pb.quad_to(cx, cy + 1.0, rx - 1.0, right_y);
            if let Some(p) = pb.finish() {
                let stroke = Stroke {
                    width: 1.8,
                    line_cap: LineCap::Round,
                    ..Stroke::default()
                };
                px.stroke_path(&p, &solid(rgb(120, 52, 54)), &stroke, feat, None);
            }
        }
    }
}

fn head_path(dx: f32, chin_drop: f32) -> Option<Path> {
    let mut pb = PathBuilder::new();
    let top = 92.0;
    let chin = 392.0 + chin_drop;
    pb.move_to(256.0 + dx, top);
    // Right side: temple, cheekbone, jaw, chin.
    pb.cubic_to(340.0 + dx, top, 378.0 + dx, 160.0, 378.0 + dx, 238.0);
    pb.cubic_to(
        378.0 + dx,
        300.0,
        352.0 + dx,
        338.0 + chin_drop * 0.6,
        318.0 + dx,
        366.0 + chin_drop * 0.9,
    );
    pb.cubic_to(
        296.0 + dx,
        384.0 + chin_drop,
        276.0 + dx,
        chin,
        256.0 + dx,
        chin,
    );
    pb.cubic_to(
        236.0 + dx,
        chin,
        216.0 + dx,
        384.0 + chin_drop,
        194.0 + dx,
        366.0 + chin_drop * 0.9,
    );
    pb.cubic_to(
        160.0 + dx,
        338.0 + chin_drop * 0.6,
        134.0 + dx,
        300.0,
        134.0 + dx,
        238.0,
    );
    pb.cubic_to(134.0 + dx, 160.0, 172.0 + dx, top, 256.0 + dx, top);
    pb.close();
    pb.finish()
}

fn fringe_path(dx: f32) -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(126.0 + dx, 236.0);
    pb.cubic_to(118.0 + dx, 130.0, 188.0 + dx, 72.0, 262.0 + dx, 74.0);
    pb.cubic_to(340.0 + dx, 76.0, 396.0 + dx, 130.0, 386.0 + dx, 236.0);
    pb.cubic_to(372.0 + dx, 186.0, 352.0 + dx, 158.0, 318.0 + dx, 142.0);
    pb.cubic_to(282.0 + dx, 166.0, 214.0 + dx, 168.0, 182.0 + dx, 146.0);
    pb.cubic_to(152.0 + dx, 168.0, 138.0 + dx, 196.0, 126.0 + dx, 236.0);
    pb.close();
    pb.finish()
}

fn neck_path() -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(214.0, 340.0);
    pb.line_to(298.0, 340.0);
    pb.cubic_to(298.0, 400.0, 304.0, 440.0, 318.0, 520.0);
    pb.line_to(194.0, 520.0);
    pb.cubic_to(208.0, 440.0, 214.0, 400.0, 214.0, 340.0);
    pb.close();
    pb.finish()
}

fn shoulders_path() -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(30.0, 540.0);
    pb.cubic_to(36.0, 470.0, 90.0, 448.0, 196.0, 440.0);
    pb.line_to(256.0, 492.0);
    pb.line_to(316.0, 440.0);
    pb.cubic_to(422.0, 448.0, 476.0, 470.0, 482.0, 540.0);
    pb.close();
    pb.finish()
}

fn collar_path() -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(196.0, 440.0);
    pb.line_to(256.0, 492.0);
    pb.line_to(316.0, 440.0);
    pb.line_to(330.0, 452.0);
    pb.line_to(256.0, 514.0);
    pb.line_to(182.0, 452.0);
    pb.close();
    pb.finish()
}

/// An eye opening: upper arc `open` above the centre, lower arc `lower` below it.
fn almond_path(cx: f32, cy: f32, half_w: f32, open: f32, lower: f32) -> Option<Path> {
    let mut pb = PathBuilder::new();
    pb.move_to(cx - half_w, cy + 1.0);
    pb.cubic_to(
        cx - half_w * 0.5,
        cy - open * 1.3,
        cx + half_w * 0.4,
        cy - open * 1.35,
        cx + half_w,
        cy + 1.0,
    );
    pb.cubic_to(
        cx + half_w * 0.4,
        cy + lower * 1.2,
        cx - half_w * 0.5,
        cy + lower * 1.2,
        cx - half_w,
        cy + 1.0,
    );
    pb.close();
    pb.finish()
}

fn draw_brows(px: &mut PixmapMut, pose: &AvatarPose, feat: Transform, hair: Color) {
    let w = &pose.weights;
    for (side, down, outer_up) in [
        (-1.0f32, w[B::BrowDownRight], w[B::BrowOuterUpRight]),
        (1.0f32, w[B::BrowDownLeft], w[B::BrowOuterUpLeft]),
    ] {
        let inner_lift = w[B::BrowInnerUp] * 11.0 - down * 7.0;
        let outer_lift = outer_up * 10.0 - down * 3.0;
        let base_y = 206.0;
        let inner = (256.0 + side * 20.0, base_y + 2.0 - inner_lift);
        let peak = (
            256.0 + side * 52.0,
            base_y - 8.0 - (inner_lift + outer_lift) * 0.5,
        );
        let outer = (256.0 + side * 80.0, base_y + 4.0 - outer_lift);
        let mut pb = PathBuilder::new();
        pb.move_to(inner.0, inner.1);
        pb.quad_to(peak.0, peak.1, outer.0, outer.1);
        if let Some(p) = pb.finish() {
            let stroke = Stroke {
                width: 7.5,
                line_cap: LineCap::Round,
                ..Stroke::default()
            };
            px.stroke_path(&p, &solid(hair), &stroke, feat, None);
        }
    }
}

fn draw_nose(px: &mut PixmapMut, pose: &AvatarPose, feat: Transform, shadow: Color) {
    let w = &pose.weights;
    let sneer = (w[B::NoseSneerLeft] + w[B::NoseSneerRight]) * 0.5 * 4.0;
    let mut pb = PathBuilder::new();
    pb.move_to(246.0, 250.0);
    pb.cubic_to(244.0, 272.0, 238.0, 288.0, 240.0, 298.0 - sneer);
    pb.quad_to(256.0, 308.0 - sneer, 272.0, 298.0 - sneer);
    if let Some(p) = pb.finish() {
        let stroke = Stroke {
            width: 2.6,
            line_cap: LineCap::Round,
            ..Stroke::default()
        };
        px.stroke_path(&p, &solid(shadow), &stroke, feat, None);
    }
    for side in [-1.0f32, 1.0] {
        if let Some(p) = oval(256.0 + side * 9.0, 300.0 - sneer, 4.2, 2.6) {
            px.fill_path(&p, &solid(rgb(150, 92, 78)), FillRule::Winding, feat, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(pose: &AvatarPose) -> Vec<u8> {
        let mut r = Renderer::new(256, 256).unwrap();
        let mut data = vec![0u8; 256 * 256 * 4];
        assert!(r.render_into(pose, &mut data, 256 * 4));
        data
    }

    fn region_diff(a: &[u8], b: &[u8], rect: FaceRect, stride: usize) -> u64 {
        let mut d = 0u64;
        for y in rect.y..rect.y + rect.h {
            for x in rect.x..rect.x + rect.w {
                let i = y as usize * stride + x as usize * 4;
                for c in 0..3 {
                    d += (a[i + c] as i32 - b[i + c] as i32).unsigned_abs() as u64;
                }
            }
        }
        d
    }

    #[test]
    fn open_jaw_changes_only_the_mouth_region() {
        let rest = AvatarPose::default();
        let mut open = rest;
        open.weights[B::JawOpen] = 0.7;
        let (a, b) = (render(&rest), render(&open));
        let r = Renderer::new(256, 256).unwrap();
        let info = r.face_info(&open);
        assert!(region_diff(&a, &b, info.mouth, 256 * 4) > 10_000);
        // Everything outside the mouth region is untouched.
        let full = FaceRect::new(0, 0, 256, 256);
        assert_eq!(
            region_diff(&a, &b, full, 256 * 4),
            region_diff(&a, &b, info.mouth, 256 * 4)
        );
    }

    #[test]
    fn padded_stride_draws_the_same_picture() {
        let pose = AvatarPose::default();
        let tight = render(&pose);
        let mut r = Renderer::new(256, 256).unwrap();
        let stride = 256 * 4 + 64;
        let mut padded = vec![0u8; stride * 256];
        assert!(r.render_into(&pose, &mut padded, stride));
        for y in 0..256 {
            assert_eq!(
                &padded[y * stride..y * stride + 1024],
                &tight[y * 1024..(y + 1) * 1024]
            );
        }
        assert!(!r.render_into(&pose, &mut padded[..100], stride));
    }
}
