//! The CPU references of the kernels in `kernels.cu`: the same arithmetic in the same order,
//! one output pixel at a time, for the tests here (against the CPU path the lip-sync engine
//! uses today) and for `facecast selftest` on a GPU (against the kernels).

// `max(lo).min(hi)`, not `clamp`: it is what the kernels' `fminf(fmaxf(v, lo), hi)` does,
// NaN included (a NaN from a model output becomes 0, where `clamp` would keep it).
#![allow(clippy::manual_clamp)]

use half::f16;

/// Crops are `CROP`×`CROP` (Wav2Lip's 96).
pub const CROP: usize = 96;

/// A face box in frame pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FaceBox {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// `crop_face`: the box of an RGBA frame (`pitch` bytes per row) resized to `CROP`² RGB.
pub fn crop_face(frame: &[u8], pitch: usize, b: FaceBox) -> Vec<u8> {
    let mut out = vec![0u8; CROP * CROP * 3];
    if b.w == 0 || b.h == 0 {
        return out;
    }
    let (rw, rh) = (b.w as usize, b.h as usize);
    let fx = b.w as f32 / CROP as f32;
    let fy = b.h as f32 / CROP as f32;
    let (max_x, max_y) = ((rw - 1) as f32, (rh - 1) as f32);
    for y in 0..CROP {
        let sy = ((y as f32 + 0.5) * fy - 0.5).max(0.0).min(max_y);
        let y0 = sy.floor() as usize;
        let y1 = (y0 + 1).min(rh - 1);
        let wy = sy - y0 as f32;
        for x in 0..CROP {
            let sx = ((x as f32 + 0.5) * fx - 0.5).max(0.0).min(max_x);
            let x0 = sx.floor() as usize;
            let x1 = (x0 + 1).min(rw - 1);
            let wx = sx - x0 as f32;
            let at = |xx: usize, yy: usize| (b.y as usize + yy) * pitch + (b.x as usize + xx) * 4;
            let (pa, pb, pc, pd) = (at(x0, y0), at(x1, y0), at(x0, y1), at(x1, y1));
            for ch in 0..3 {
                let top = frame[pa + ch] as f32 * (1.0 - wx) + frame[pb + ch] as f32 * wx;
                let bottom = frame[pc + ch] as f32 * (1.0 - wx) + frame[pd + ch] as f32 * wx;
                out[(y * CROP + x) * 3 + ch] = (top * (1.0 - wy) + bottom * wy).round() as u8;
            }
        }
    }
    out
}

/// `face_tensor`: a crop as the model's face input, `[6][CROP][CROP]` fp16: B, G, R with the
/// lower half zeroed, then B, G, R whole, 0..1.
pub fn face_tensor(crop: &[u8]) -> Vec<f16> {
    // The same values as the fp32 input, each rounded to fp16 (as the kernel's `cvt.rn`).
    face_input_f32(crop)
        .into_iter()
        .map(f16::from_f32)
        .collect()
}

/// `face_input_f32`: the same input in fp32, as the model's input tensor takes it.
pub fn face_input_f32(crop: &[u8]) -> Vec<f32> {
    let plane = CROP * CROP;
    let mut out = vec![0f32; 6 * plane];
    for y in 0..CROP {
        for x in 0..CROP {
            let p = (y * CROP + x) * 3;
            let o = y * CROP + x;
            for c in 0..3 {
                let v = crop[p + 2 - c] as f32 / 255.0;
                out[c * plane + o] = if y < CROP / 2 { v } else { 0.0 };
                out[(3 + c) * plane + o] = v;
            }
        }
    }
    out
}

fn sample(p: impl Fn(usize) -> f32, u: f32, v: f32) -> f32 {
    let last = (CROP - 1) as f32;
    let (u, v) = (u.max(0.0).min(last), v.max(0.0).min(last));
    let (x0, y0) = (u.floor() as usize, v.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(CROP - 1), (y0 + 1).min(CROP - 1));
    let (wx, wy) = (u - x0 as f32, v - y0 as f32);
    let top = p(y0 * CROP + x0) * (1.0 - wx) + p(y0 * CROP + x1) * wx;
    let bottom = p(y1 * CROP + x0) * (1.0 - wx) + p(y1 * CROP + x1) * wx;
    top * (1.0 - wy) + bottom * wy
}

/// `paste`: the model's output (planar B, G, R fp16, 0..1) resized into the box of an RGBA
/// frame and blended through `mask` (`CROP`², 0..255).
pub fn paste(frame: &mut [u8], pitch: usize, b: FaceBox, output: &[f16], mask: &[u8]) {
    blend(frame, pitch, b, |i| output[i].to_f32(), mask);
}

/// `compose`: a live output frame, the avatar frame (`pitch` bytes a row) with the model's
/// fp32 output (as ONNX Runtime leaves it on the GPU) blended into the box as by [`paste`].
pub fn compose(frame: &[u8], pitch: usize, b: FaceBox, output: &[f32], mask: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    blend(&mut out, pitch, b, |i| output[i], mask);
    out
}

/// The blend of `paste` and `compose`, reading the output's value `i` through `output`.
fn blend(frame: &mut [u8], pitch: usize, b: FaceBox, output: impl Fn(usize) -> f32, mask: &[u8]) {
    let plane = CROP * CROP;
    let fx = CROP as f32 / b.w.max(1) as f32;
    let fy = CROP as f32 / b.h.max(1) as f32;
    for y in 0..b.h as usize {
        let v = (y as f32 + 0.5) * fy - 0.5;
        for x in 0..b.w as usize {
            let u = (x as f32 + 0.5) * fx - 0.5;
            let alpha = sample(|i| mask[i] as f32, u, v) / 255.0;
            if alpha <= 0.0 {
                continue;
            }
            let px = (b.y as usize + y) * pitch + (b.x as usize + x) * 4;
            for ch in 0..3 {
                let src = (2 - ch) * plane;
                let model = sample(|i| output(src + i), u, v).max(0.0).min(1.0) * 255.0;
                let old = frame[px + ch] as f32;
                frame[px + ch] = (old + (model - old) * alpha).round() as u8;
            }
        }
    }
}

fn luma(r: f32, g: f32, b: f32) -> f32 {
    16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
}
fn chroma_u(r: f32, g: f32, b: f32) -> f32 {
    128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
}
fn chroma_v(r: f32, g: f32, b: f32) -> f32 {
    128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
}

/// `rgba_to_i420`: an RGBA frame to planar I420 (BT.601 limited range, as `videoconvert`
/// gives for standard-definition video): Y, then U and V at half size (rounded up), each
/// chroma sample the mean of its 2×2 block, edge pixels repeated for odd sizes.
pub fn rgba_to_i420(frame: &[u8], pitch: usize, w: usize, h: usize) -> Vec<u8> {
    let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
    let mut out = vec![0u8; w * h + 2 * cw * ch];
    for cy in 0..ch {
        for cx in 0..cw {
            let (mut su, mut sv) = (0f32, 0f32);
            for dy in 0..2 {
                for dx in 0..2 {
                    let (x, y) = ((2 * cx + dx).min(w - 1), (2 * cy + dy).min(h - 1));
                    let p = y * pitch + x * 4;
                    let (r, g, b) = (frame[p] as f32, frame[p + 1] as f32, frame[p + 2] as f32);
                    if 2 * cx + dx < w && 2 * cy + dy < h {
                        out[y * w + x] = luma(r, g, b).round() as u8;
                    }
                    su += chroma_u(r, g, b);
                    sv += chroma_v(r, g, b);
                }
            }
            out[w * h + cy * cw + cx] = (su / 4.0).round() as u8;
            out[w * h + cw * ch + cy * cw + cx] = (sv / 4.0).round() as u8;
        }
    }
    out
}

/// The largest difference between two 8-bit images, in levels.
pub fn max_level_difference(a: &[u8], b: &[u8]) -> u8 {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

/// The largest difference between two fp16 tensors of values in 0..1, in 8-bit levels.
pub fn max_tensor_difference(a: &[f16], b: &[f16]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x.to_f32() - y.to_f32()).abs() * 255.0)
        .fold(0.0, f32::max)
}
