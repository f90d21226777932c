//! Where two frames differ: the box around every changed pixel, for `deltaconvert`.

/// A rectangle of pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// The smallest box holding every pixel where `a` and `b` differ, or `None` when they are the
/// same. Both are `width` × `height` frames of 4-byte pixels, rows `a_stride` and `b_stride`
/// bytes apart.
pub fn changed_box(
    a: &[u8],
    a_stride: usize,
    b: &[u8],
    b_stride: usize,
    width: usize,
    height: usize,
) -> Option<Rect> {
    let row_bytes = width * 4;
    // x0..x1 and y0..y1 so far; rows only look beyond the columns already in the box, so
    // after the first changed row most rows cost two short comparisons.
    let (mut x0, mut x1) = (width, 0);
    let (mut y0, mut y1) = (height, 0);
    for y in 0..height {
        let ra = &a[y * a_stride..][..row_bytes];
        let rb = &b[y * b_stride..][..row_bytes];
        let left = ra[..x0 * 4] != rb[..x0 * 4];
        let right = x1 < width && ra[x1 * 4..] != rb[x1 * 4..];
        let inside = x0 < x1 && ra[x0 * 4..x1 * 4] != rb[x0 * 4..x1 * 4];
        if !(left || right || inside) {
            continue;
        }
        let differs = |x: &usize| ra[x * 4..x * 4 + 4] != rb[x * 4..x * 4 + 4];
        if left {
            x0 = (0..x0).find(differs).unwrap_or(x0);
        }
        if right || x0 >= x1 {
            let from = x1.max(x0);
            x1 = (from..width).rev().find(differs).map_or(x1, |x| x + 1);
        }
        y0 = y0.min(y);
        y1 = y + 1;
    }
    (y1 > y0).then(|| Rect {
        x: x0 as u32,
        y: y0 as u32,
        w: (x1 - x0) as u32,
        h: (y1 - y0) as u32,
    })
}

/// `r` grown out to whole `block` × `block` blocks, kept within `width` × `height`. With an even
/// block every edge is even, so no 2×2 chroma block is half inside.
pub fn round_out(r: Rect, block: u32, width: u32, height: u32) -> Rect {
    let (x0, y0) = (r.x / block * block, r.y / block * block);
    let x1 = (r.x + r.w).div_ceil(block) * block;
    let y1 = (r.y + r.h).div_ceil(block) * block;
    Rect {
        x: x0,
        y: y0,
        w: x1.min(width) - x0,
        h: y1.min(height) - y0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(h: usize, stride: usize, seed: u64) -> Vec<u8> {
        let mut rng = fastrand::Rng::with_seed(seed);
        (0..stride * h).map(|_| rng.u8(..)).collect()
    }

    /// The box found by looking at every pixel.
    fn slow_box(a: &[u8], sa: usize, b: &[u8], sb: usize, w: usize, h: usize) -> Option<Rect> {
        let mut pixels = (0..h)
            .flat_map(|y| (0..w).map(move |x| (x, y)))
            .filter(|&(x, y)| a[y * sa + x * 4..][..4] != b[y * sb + x * 4..][..4]);
        let first = pixels.next()?;
        let (mut x0, mut x1, mut y0, mut y1) = (first.0, first.0 + 1, first.1, first.1 + 1);
        for (x, y) in pixels {
            (x0, x1, y0, y1) = (x0.min(x), x1.max(x + 1), y0.min(y), y1.max(y + 1));
        }
        Some(Rect {
            x: x0 as u32,
            y: y0 as u32,
            w: (x1 - x0) as u32,
            h: (y1 - y0) as u32,
        })
    }

    #[test]
    fn the_same_frames_have_no_box() {
        let a = frame(17, 33 * 4 + 12, 1);
        assert_eq!(changed_box(&a, 33 * 4 + 12, &a, 33 * 4 + 12, 33, 17), None);
    }

    #[test]
    fn the_box_holds_exactly_the_changed_pixels() {
        let mut rng = fastrand::Rng::with_seed(7);
        for round in 0..500 {
            let (w, h) = (rng.usize(1..40), rng.usize(1..30));
            let (sa, sb) = (w * 4 + rng.usize(0..3) * 4, w * 4);
            let a = frame(h, sa, round);
            let mut b: Vec<u8> = (0..h).flat_map(|y| a[y * sa..][..w * 4].to_vec()).collect();
            // A few changed pixels, sometimes in one channel only.
            for _ in 0..rng.usize(0..6) {
                let (x, y, c) = (rng.usize(0..w), rng.usize(0..h), rng.usize(0..4));
                b[y * sb + x * 4 + c] ^= 1 + rng.u8(..254);
            }
            assert_eq!(
                changed_box(&a, sa, &b, sb, w, h),
                slow_box(&a, sa, &b, sb, w, h),
                "{w}x{h}, round {round}"
            );
        }
    }

    #[test]
    fn boxes_round_out_to_blocks_inside_the_frame() {
        let r = Rect {
            x: 210,
            y: 250,
            w: 91,
            h: 121,
        };
        assert_eq!(
            round_out(r, 16, 512, 512),
            Rect {
                x: 208,
                y: 240,
                w: 96,
                h: 144
            }
        );
        let edge = Rect {
            x: 500,
            y: 0,
            w: 9,
            h: 3,
        };
        assert_eq!(
            round_out(edge, 16, 510, 300),
            Rect {
                x: 496,
                y: 0,
                w: 14,
                h: 16
            }
        );
    }
}
