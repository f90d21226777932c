//! The face crop and blend mask stored with every registered frame.
//!
//! Both use the Wav2Lip conventions: the crop is the face box resized (bilinear, pixel centres
//! aligned like OpenCV's `INTER_LINEAR`) to 96×96; the model repaints the lower half of it. The
//! original pastes the whole box back as a hard rectangle, which shows seams at the box edges and
//! across the cheeks; our mask keeps only the mouth and jaw, with feathered edges, so the rest of
//! the face stays the real frame's pixels.

use crate::CROP_SIZE;
use facecast_common::Rect;

/// Resizes the `rect` region of an RGBA frame (`stride` bytes per row) to `CROP_SIZE`² RGB.
///
/// Every pixel is sampled as on its own (`facecast-gpu`'s `crop_face` kernel does exactly that,
/// and its reference is checked against this function to the bit), but where each column and
/// row samples is worked out once per box, and rounding needs no libm call: this runs for every
/// frame of a video that is not a registered avatar.
pub fn crop_face(rgba: &[u8], stride: usize, rect: Rect) -> Vec<u8> {
    let n = CROP_SIZE;
    let mut out = vec![0u8; n * n * 3];
    if rect.w == 0 || rect.h == 0 {
        return out;
    }
    let (columns, rows) = (
        bilinear_taps(n, rect.w as usize),
        bilinear_taps(n, rect.h as usize),
    );
    let left = rect.x as usize * 4;
    let pixel =
        |row: &[u8], x: usize| -> [u8; 4] { row[x * 4..x * 4 + 4].try_into().expect("four bytes") };
    for (&(y0, y1, wy), out_row) in rows.iter().zip(out.chunks_exact_mut(n * 3)) {
        let row = |y: usize| &rgba[(rect.y as usize + y) * stride + left..];
        let (above, below) = (row(y0), row(y1));
        for (&(x0, x1, wx), px) in columns.iter().zip(out_row.chunks_exact_mut(3)) {
            let (a, b) = (pixel(above, x0), pixel(above, x1));
            let (c, d) = (pixel(below, x0), pixel(below, x1));
            for (ch, v) in px.iter_mut().enumerate() {
                let top = a[ch] as f32 * (1.0 - wx) + b[ch] as f32 * wx;
                let bottom = c[ch] as f32 * (1.0 - wx) + d[ch] as f32 * wx;
                *v = round_half_up(top * (1.0 - wy) + bottom * wy);
            }
        }
    }
    out
}

/// Where each of `samples` evenly spaced samples across `source` pixels reads (pixel centres
/// aligned, as OpenCV's `INTER_LINEAR`): its two neighbours and the second's weight. The crop
/// (box → 96) and the paste (96 → box) both resize through these, with the GPU kernels' exact
/// arithmetic.
pub fn bilinear_taps(samples: usize, source: usize) -> Vec<(usize, usize, f32)> {
    let f = source as f32 / samples.max(1) as f32;
    let last = source.saturating_sub(1);
    (0..samples)
        .map(|i| {
            let s = ((i as f32 + 0.5) * f - 0.5).clamp(0.0, last as f32);
            // Clamped to ≥ 0, where truncation is floor (and needs no libm call).
            let i0 = s as usize;
            (i0, (i0 + 1).min(last), s - i0 as f32)
        })
        .collect()
}

/// `v.round() as u8` for `v` in 0..=255, without libm: the fraction left by truncation is exact,
/// so halves round up as `round` rounds them (adding ½ first would round some values just
/// under a half up).
fn round_half_up(v: f32) -> u8 {
    let whole = v as u8;
    whole + u8::from(v - whole as f32 >= 0.5)
}

/// Landmarks guessed from a box alone (a manual `--face-box`), in the proportions of a frontal
/// face as YuNet reports them.
pub fn default_landmarks(rect: Rect) -> [[f32; 2]; 5] {
    let at = |fx: f32, fy: f32| {
        [
            rect.x as f32 + fx * rect.w as f32,
            rect.y as f32 + fy * rect.h as f32,
        ]
    };
    [
        at(0.28, 0.39),
        at(0.72, 0.39),
        at(0.5, 0.58),
        at(0.31, 0.76),
        at(0.69, 0.76),
    ]
}

/// The feathered mouth-and-jaw mask over a face crop: an ellipse under the nose that reaches the
/// chin and spans a little more than the mouth corners, fading out over its outer quarter.
/// `landmarks` are in frame pixels; `rect` is the face box the crop was taken from.
pub fn mouth_mask(rect: Rect, landmarks: &[[f32; 2]; 5]) -> Vec<u8> {
    let n = CROP_SIZE as f32;
    // Landmarks in crop coordinates.
    let to_crop = |p: [f32; 2]| {
        [
            (p[0] - rect.x as f32) * n / rect.w.max(1) as f32,
            (p[1] - rect.y as f32) * n / rect.h.max(1) as f32,
        ]
    };
    let nose = to_crop(landmarks[2]);
    let (mr, ml) = (to_crop(landmarks[3]), to_crop(landmarks[4]));
    let mouth_x = (mr[0] + ml[0]) / 2.0;
    let mouth_y = (mr[1] + ml[1]) / 2.0;
    let mouth_w = (ml[0] - mr[0]).abs().max(n * 0.2);
    // From just under the nose to the bottom of the crop (the box's padding holds the chin).
    let top = (nose[1] + (mouth_y - nose[1]) * 0.35).clamp(n * 0.3, n * 0.8);
    let bottom = n;
    let cy = (top + bottom) / 2.0;
    let ry = ((bottom - top) / 2.0).max(1.0);
    let rx = (mouth_w * 0.95).clamp(n * 0.2, n * 0.5);
    let cx = mouth_x.clamp(rx.min(n / 2.0), n - rx.min(n / 2.0));
    let mut mask = vec![0u8; CROP_SIZE * CROP_SIZE];
    for y in 0..CROP_SIZE {
        for x in 0..CROP_SIZE {
            let dx = (x as f32 + 0.5 - cx) / rx;
            let dy = (y as f32 + 0.5 - cy) / ry;
            let r = (dx * dx + dy * dy).sqrt();
            // 1 inside r ≤ 0.75, smoothstep down to 0 at r = 1.
            let t = ((1.0 - r) / 0.25).clamp(0.0, 1.0);
            let v = t * t * (3.0 - 2.0 * t);
            mask[y * CROP_SIZE + x] = (v * 255.0).round() as u8;
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_round() {
        for v in [
            0.0f32, 0.49999997, 0.5, 1.5, 2.4999998, 254.5, 254.99998, 255.0,
        ] {
            assert_eq!(round_half_up(v), v.round() as u8, "{v}");
        }
    }

    #[test]
    fn crop_of_a_uniform_region_is_uniform() {
        let (w, h) = (40usize, 30usize);
        let mut frame = vec![0u8; w * h * 4];
        for px in frame.chunks_exact_mut(4) {
            px.copy_from_slice(&[10, 20, 30, 255]);
        }
        let crop = crop_face(&frame, w * 4, Rect::new(5, 5, 20, 20));
        assert_eq!(crop.len(), CROP_SIZE * CROP_SIZE * 3);
        assert!(crop.chunks_exact(3).all(|p| p == [10, 20, 30]));
    }

    #[test]
    fn crop_follows_the_box() {
        // Left half red, right half green; a box over the right half sees only green.
        let (w, h) = (64usize, 32usize);
        let mut frame = vec![0u8; w * h * 4];
        for (i, px) in frame.chunks_exact_mut(4).enumerate() {
            let c = if i % w < 32 {
                [255, 0, 0, 255]
            } else {
                [0, 255, 0, 255]
            };
            px.copy_from_slice(&c);
        }
        let crop = crop_face(&frame, w * 4, Rect::new(32, 0, 32, 32));
        assert!(crop.chunks_exact(3).all(|p| p == [0, 255, 0]));
    }

    #[test]
    fn mask_covers_mouth_and_jaw_not_eyes() {
        let rect = Rect::new(100, 100, 96, 96);
        let mask = mouth_mask(rect, &default_landmarks(rect));
        let at = |x: usize, y: usize| mask[y * CROP_SIZE + x];
        assert_eq!(at(48, 80), 255, "mouth/jaw fully replaced");
        assert_eq!(at(30, 37), 0, "eye kept");
        assert_eq!(at(2, 2), 0);
        // Feathered: some values strictly between.
        assert!(mask.iter().any(|&v| v > 0 && v < 255));
    }
}
