//! `avatarsrc` alone, through `gst_check::Harness`.

use facecast_common::{Blendshape, FaceInfo};
use gst::prelude::*;
use gst_check::Harness;

fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfacecastavatar::plugin_register_static().unwrap();
    });
}

fn frames(h: &mut Harness, n: usize) -> Vec<gst::Buffer> {
    (0..n).map(|_| h.pull().unwrap()).collect()
}

#[test]
fn default_caps_timestamps_and_face_meta() {
    init();
    let mut h = Harness::new("avatarsrc");
    h.play();
    let buffers = frames(&mut h, 30);
    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let info = gst_video::VideoInfo::from_caps(&caps).unwrap();
    assert_eq!((info.width(), info.height()), (512, 512));
    assert_eq!(info.fps(), gst::Fraction::new(25, 1));
    assert_eq!(info.format(), gst_video::VideoFormat::Rgba);
    for (n, b) in buffers.iter().enumerate() {
        assert_eq!(b.pts(), Some(gst::ClockTime::from_mseconds(40 * n as u64)));
        assert_eq!(b.duration(), Some(gst::ClockTime::from_mseconds(40)));
        let face = FaceInfo::from_buffer(b).expect("face meta on every frame");
        let pose = face.pose.expect("parametric pose");
        // The face sits in the middle of the frame and the mouth region in its lower half.
        assert!(
            face.face.x > 64 && face.face.x + face.face.w < 448,
            "{face:?}"
        );
        assert!(
            face.mouth.y + face.mouth.h / 2 > face.face.y + face.face.h / 2,
            "{face:?}"
        );
        assert!(face.mouth.y + face.mouth.h <= 512);
        assert_eq!(pose.weights[Blendshape::JawOpen], 0.0);
        // An opaque, drawn picture (not a blank buffer).
        let map = b.map_readable().unwrap();
        assert!(map.chunks_exact(4).all(|p| p[3] == 255));
    }
}

#[test]
fn size_and_rate_follow_downstream_caps() {
    init();
    let mut h = Harness::new_parse(
        "avatarsrc ! capsfilter caps=video/x-raw,width=320,height=240,framerate=30/1",
    );
    h.play();
    let b = h.pull().unwrap();
    assert_eq!(b.size(), 320 * 240 * 4);
    let b2 = h.pull().unwrap();
    assert_eq!(b2.pts(), Some(gst::ClockTime::SECOND / 30));
}

#[test]
fn alive_while_silent_blinks_and_moves() {
    init();
    let mut h =
        Harness::new_parse("avatarsrc seed=3 ! capsfilter caps=video/x-raw,width=128,height=128");
    h.play();
    let buffers = frames(&mut h, 250); // 10 s
    let poses: Vec<_> = buffers
        .iter()
        .map(|b| FaceInfo::from_buffer(b).unwrap().pose.unwrap())
        .collect();
    let blinks = poses
        .windows(2)
        .filter(|w| {
            w[0].weights[Blendshape::EyeBlinkLeft] <= 0.5
                && w[1].weights[Blendshape::EyeBlinkLeft] > 0.5
        })
        .count();
    assert!((1..=8).contains(&blinks), "{blinks} blinks in 10 s");
    let sway = poses.iter().map(|p| p.head_roll).fold(f32::MIN, f32::max)
        - poses.iter().map(|p| p.head_roll).fold(f32::MAX, f32::min);
    assert!(sway > 0.005, "head does not sway");
    // Pixels change over time even in silence.
    assert_ne!(
        buffers[0].map_readable().unwrap().as_slice(),
        buffers[100].map_readable().unwrap().as_slice()
    );
}

#[test]
fn emotion_property_eases_into_the_expression() {
    init();
    let mut h = Harness::new_parse("avatarsrc emotion=concerned emotion-intensity=1.0 ! capsfilter caps=video/x-raw,width=128,height=128");
    h.play();
    let buffers = frames(&mut h, 50);
    let brow = |b: &gst::Buffer| {
        FaceInfo::from_buffer(b).unwrap().pose.unwrap().weights[Blendshape::BrowInnerUp]
    };
    assert!(brow(&buffers[0]) < 0.15);
    assert!(brow(&buffers[49]) > 0.55);
}
