//! `deltaconvert` against `videoconvert`: the same I420 from the same RGBA frames, whatever
//! changed between them.

use gst::prelude::*;
use gst_check::Harness;
use gst_video::prelude::*;

fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfacecastavatar::plugin_register_static().unwrap();
    });
}

// Odd sizes: the last chroma column and row cover one pixel.
const W: usize = 201;
const H: usize = 151;

fn harness(description: &str) -> Harness {
    let mut h = Harness::new_parse(description);
    h.set_src_caps_str(&format!(
        "video/x-raw,format=RGBA,width={W},height={H},framerate=25/1"
    ));
    h.play();
    h
}

/// A still picture whose "mouth" box, at odd coordinates, is repainted in most frames; some
/// frames repeat the one before, some change a single pixel, and frame 7 changes everywhere
/// (after which `deltaconvert` converts whole frames for a while, then compares again).
fn frames() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(11);
    let still: Vec<u8> = (0..W * H * 4).map(|_| rng.u8(..)).collect();
    let mut frames = vec![still.clone()];
    for n in 1..80 {
        let mut f = frames.last().unwrap().clone();
        match n % 10 {
            _ if n == 7 => f = (0..W * H * 4).map(|_| rng.u8(..)).collect(),
            3 => {}
            9 => f[(H - 1) * W * 4 + (W - 1) * 4 + 1] ^= 0x55,
            _ => {
                // Sometimes on a block's first pixel, sometimes just after it.
                let (x0, y0) = (64 - rng.usize(0..2) * 3, 80 + rng.usize(0..3));
                for y in y0..y0 + 37 {
                    for x in x0..x0 + 29 {
                        f[(y * W + x) * 4 + rng.usize(0..3)] = rng.u8(..);
                    }
                }
            }
        }
        frames.push(f);
    }
    frames
}

fn convert(description: &str, frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut h = harness(description);
    frames
        .iter()
        .enumerate()
        .map(|(n, f)| {
            let mut b = gst::Buffer::from_slice(f.clone());
            b.get_mut()
                .unwrap()
                .set_pts(gst::ClockTime::from_mseconds(40 * n as u64));
            h.push(b).unwrap();
            let out = h.pull().unwrap();
            let caps = h.sinkpad().unwrap().current_caps().unwrap();
            assert_eq!(
                caps.structure(0).unwrap().get::<&str>("format").unwrap(),
                "I420"
            );
            pixels(out, &caps)
        })
        .collect()
}

/// The visible bytes of an I420 frame, plane by plane (the padding at the end of each row is
/// no part of the picture).
fn pixels(buffer: gst::Buffer, caps: &gst::Caps) -> Vec<u8> {
    let info = gst_video::VideoInfo::from_caps(caps).unwrap();
    let frame = gst_video::VideoFrame::from_buffer_readable(buffer, &info).unwrap();
    let mut out = Vec::new();
    for plane in 0..3u32 {
        let (w, h) = match plane {
            0 => (W, H),
            _ => (W.div_ceil(2), H.div_ceil(2)),
        };
        let stride = frame.plane_stride()[plane as usize] as usize;
        let data = frame.plane_data(plane).unwrap();
        for row in 0..h {
            out.extend_from_slice(&data[row * stride..][..w]);
        }
    }
    out
}

#[test]
fn deltaconvert_gives_what_videoconvert_gives() {
    init();
    let frames = frames();
    let ours = convert("deltaconvert", &frames);
    let theirs = convert(
        "videoconvert ! capsfilter caps=video/x-raw,format=I420",
        &frames,
    );
    for (n, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(a.len(), b.len(), "frame {n}");
        let worst = a.iter().zip(b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
        assert_eq!(worst, 0, "frame {n}: {worst} levels from videoconvert");
    }
}

#[test]
fn a_repeated_buffer_gives_the_same_picture() {
    init();
    let mut h = harness("deltaconvert");
    let frame = gst::Buffer::from_slice(frames().remove(5));
    h.push(frame.clone()).unwrap();
    let first = h.pull().unwrap();
    h.push(frame).unwrap();
    let second = h.pull().unwrap();
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    assert!(pixels(first, &caps) == pixels(second, &caps));
}
