//! The GPU kernels' CPU references (`facecast-gpu`) against the CPU path the Wav2Lip engine
//! runs today, on fresh random frames, boxes, model outputs and real mouth masks: the kernels
//! are checked against the same references on a GPU by `facecast selftest --device cuda:0`.

use facecast_avatars::crop::{crop_face, default_landmarks, mouth_mask};
use facecast_common::Rect;
use facecast_gpu::f16;
use facecast_gpu::reference::{self, CROP};
use gstfacecastlipsync::engine::wav2lip::paste;
use gstfacecastlipsync::wav2lip_frames::face_box;
use gstfacecastlipsync::wav2lip_model::face_input;

struct Case {
    frame: Vec<u8>,
    pitch: usize,
    rect: Rect,
}

/// A random RGBA frame (rows padded, as GStreamer's may be) and a random box inside it.
fn case(rng: &mut fastrand::Rng) -> Case {
    let (w, h) = (rng.usize(200..700), rng.usize(200..700));
    let pitch = w * 4 + rng.usize(0..4) * 4;
    let frame = (0..pitch * h).map(|_| rng.u8(..)).collect();
    let (bw, bh) = (rng.u32(2..(w as u32 / 2)), rng.u32(2..(h as u32 / 2)));
    let rect = Rect::new(
        rng.u32(0..(w as u32 - bw)),
        rng.u32(0..(h as u32 - bh)),
        bw,
        bh,
    );
    Case { frame, pitch, rect }
}

#[test]
fn the_crop_reference_is_the_engines_crop() {
    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    for _ in 0..20 {
        let c = case(&mut rng);
        assert_eq!(
            reference::crop_face(&c.frame, c.pitch, face_box(c.rect)),
            crop_face(&c.frame, c.pitch, c.rect),
            "box {:?}",
            c.rect
        );
    }
}

#[test]
fn the_fp16_face_tensor_is_the_engines_to_half_precision() {
    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    for _ in 0..20 {
        let crop: Vec<u8> = (0..CROP * CROP * 3).map(|_| rng.u8(..)).collect();
        let half = reference::face_tensor(&crop);
        let full = face_input(&crop);
        assert_eq!(half.len(), full.len());
        for (i, (h, f)) in half.iter().zip(&full).enumerate() {
            // fp16 keeps 11 significant bits: within 2^-11 of values in 0..1.
            assert!(
                (h.to_f32() - f).abs() <= 1.0 / 2048.0,
                "element {i}: {h} vs {f}"
            );
        }
        // The lower half of the first three channels is zero, exactly.
        assert!(half[48 * CROP..CROP * CROP]
            .iter()
            .all(|v| v.to_f32() == 0.0));
    }
}

#[test]
fn the_fp32_face_input_reference_is_the_engines_exactly() {
    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    for _ in 0..20 {
        let crop: Vec<u8> = (0..CROP * CROP * 3).map(|_| rng.u8(..)).collect();
        assert_eq!(reference::face_input_f32(&crop), face_input(&crop));
    }
}

#[test]
fn the_fp16_paste_is_the_engines_paste() {
    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    for _ in 0..20 {
        let c = case(&mut rng);
        let mask = mouth_mask(c.rect, &default_landmarks(c.rect));
        // Model outputs stray a little outside 0..1: the paste clamps them.
        let output: Vec<f16> = (0..3 * CROP * CROP)
            .map(|_| f16::from_f32(rng.f32() * 1.2 - 0.1))
            .collect();
        let widened: Vec<f32> = output.iter().map(|v| v.to_f32()).collect();
        let mut ours = c.frame.clone();
        reference::paste(&mut ours, c.pitch, face_box(c.rect), &output, &mask);
        let mut engines = c.frame.clone();
        paste(&mut engines, c.pitch, c.rect, &widened, &mask);
        assert_eq!(
            reference::max_level_difference(&ours, &engines),
            0,
            "box {:?}",
            c.rect
        );
        assert_ne!(ours, c.frame, "the mask let something through");
    }
}

#[test]
fn the_composed_frame_is_the_engines_copy_and_paste() {
    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    for _ in 0..20 {
        let c = case(&mut rng);
        let mask = mouth_mask(c.rect, &default_landmarks(c.rect));
        // fp32, as the model leaves its output on the GPU, straying a little outside 0..1.
        let output: Vec<f32> = (0..3 * CROP * CROP)
            .map(|_| rng.f32() * 1.2 - 0.1)
            .collect();
        let ours = reference::compose(&c.frame, c.pitch, face_box(c.rect), &output, &mask);
        let mut engines = c.frame.clone();
        paste(&mut engines, c.pitch, c.rect, &output, &mask);
        assert_eq!(ours, engines, "box {:?}", c.rect);
        assert_ne!(ours, c.frame, "the mask let something through");
    }
}

/// What GStreamer's `videoconvert` makes of an RGBA frame as I420.
fn videoconvert_i420(frame: &[u8], w: usize, h: usize) -> Vec<u8> {
    use gst::prelude::*;
    gst::init().unwrap();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src caps=video/x-raw,format=RGBA,width={w},height={h},framerate=25/1 \
         ! videoconvert ! video/x-raw,format=I420 ! appsink name=sink"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    let sink = pipeline
        .by_name("sink")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    src.push_buffer(gst::Buffer::from_slice(frame.to_vec()))
        .unwrap();
    src.end_of_stream().unwrap();
    let sample = sink.pull_sample().expect("a converted frame");
    pipeline.set_state(gst::State::Null).unwrap();
    let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
    let map = sample.buffer().unwrap().map_readable().unwrap();
    // Planes without their row padding.
    let mut out = Vec::new();
    for plane in 0..3 {
        let (pw, ph) = if plane == 0 {
            (w, h)
        } else {
            (w.div_ceil(2), h.div_ceil(2))
        };
        let (offset, stride) = (info.offset()[plane], info.stride()[plane] as usize);
        for row in 0..ph {
            out.extend_from_slice(&map[offset + row * stride..][..pw]);
        }
    }
    out
}

#[test]
fn the_i420_reference_is_what_videoconvert_gives() {
    let mut rng = fastrand::Rng::with_seed(fastrand::u64(..));
    for (w, h) in [(96, 64), (512, 512), (130, 98)] {
        // Noise (every pixel its own colour) and smooth gradients.
        let noise: Vec<u8> = (0..w * h * 4).map(|_| rng.u8(..)).collect();
        let gradient: Vec<u8> = (0..w * h)
            .flat_map(|i| {
                let (x, y) = (i % w, i / w);
                [
                    (x * 255 / w) as u8,
                    (y * 255 / h) as u8,
                    ((x + y) % 256) as u8,
                    255,
                ]
            })
            .collect();
        for frame in [noise, gradient] {
            let ours = reference::rgba_to_i420(&frame, w * 4, w, h);
            let theirs = videoconvert_i420(&frame, w, h);
            assert_eq!(ours.len(), theirs.len());
            let diff = reference::max_level_difference(&ours, &theirs);
            assert!(diff <= 1, "{w}x{h}: {diff} levels from videoconvert");
        }
    }
}
