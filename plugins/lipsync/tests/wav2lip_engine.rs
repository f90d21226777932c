//! `lipsync engine=wav2lip` end to end: a registered photo avatar (the astronaut portrait, face
//! found by YuNet) played by `avatarsrc`, speech-like audio, and the generated Wav2Lip-architecture
//! test model (`scripts/fetch-test-assets.sh`).

use facecast_avatars::registration::{register, RegisterOptions};
use facecast_avatars::store::AvatarStore;
use facecast_common::FaceInfo;
use gst::prelude::*;
use std::sync::OnceLock;

/// Registers the astronaut once per test process into a temporary data folder.
fn setup() -> &'static AvatarStore {
    static STORE: OnceLock<(tempfile::TempDir, &'static AvatarStore)> = OnceLock::new();
    STORE
        .get_or_init(|| {
            gst::init().unwrap();
            gstfacecastlipsync::plugin_register_static().unwrap();
            gstfacecastavatar::plugin_register_static().unwrap();
            let (detector, portrait) = (facecast_testkit::yunet(), facecast_testkit::portrait());
            facecast_testkit::wav2lip_model();
            let dir = tempfile::tempdir().unwrap();
            let store = AvatarStore::init_global(dir.path(), 4);
            assert_eq!(store.dir(), dir.path().join("avatars"), "store set up once");
            register(
                store,
                &RegisterOptions::new("astronaut", &portrait, &detector),
                &mut |_, _| {},
            )
            .unwrap();
            (dir, store)
        })
        .1
}

struct Run {
    frames: Vec<gst::Buffer>,
    /// The avatar frame (the photo) the output started from.
    avatar: gst::Buffer,
    info: gst_video::VideoInfo,
}

/// 1 s of a vowel-like buzz at 22.05 kHz through `lipsync engine=wav2lip batch-size=N`.
fn run(batch: u32) -> Run {
    run_with(batch, "saw")
}

/// Plays `description` to its end: every sample its `out` appsink got (none for 60 s ends it),
/// the pipeline, still playing, and the `lipsync-error` messages it posted. A pipeline error
/// fails the test.
fn play(description: &str) -> (Vec<gst::Sample>, gst::Pipeline, Vec<gst::Structure>) {
    let pipeline = gst::parse::launch(description)
        .unwrap()
        .downcast::<gst::Pipeline>()
        .unwrap();
    let out = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut samples = Vec::new();
    while let Some(sample) = out.try_pull_sample(gst::ClockTime::from_seconds(60)) {
        samples.push(sample);
        if out.is_eos() {
            break;
        }
    }
    let bus = pipeline.bus().unwrap();
    let mut lipsync_errors = Vec::new();
    while let Some(msg) = bus.pop() {
        match msg.view() {
            gst::MessageView::Error(_) => panic!("pipeline error: {msg:?}"),
            gst::MessageView::Element(e) => {
                if let Some(s) = e
                    .structure()
                    .filter(|s| s.name() == gstfacecastlipsync::LIPSYNC_ERROR_MESSAGE)
                {
                    lipsync_errors.push(s.to_owned());
                }
            }
            _ => {}
        }
    }
    (samples, pipeline, lipsync_errors)
}

fn run_with(batch: u32, wave: &str) -> Run {
    setup();
    let (samples, pipeline, _) = play(&format!(
        "audiotestsrc wave={wave} freq=140 volume=0.5 num-buffers=50 samplesperbuffer=441 \
           ! audio/x-raw,rate=22050,channels=1,format=S16LE ! ls.audio \
         avatarsrc avatar=astronaut ! tee name=t ! queue ! ls.video \
         t. ! queue ! appsink name=avatar sync=false max-buffers=1 drop=true \
         lipsync name=ls engine=wav2lip model={} batch-size={batch} threads=2 \
           ! appsink name=out sync=false",
        facecast_testkit::wav2lip_model().display()
    ));
    let avatar_sink = pipeline
        .by_name("avatar")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    let avatar = avatar_sink
        .try_pull_sample(gst::ClockTime::from_seconds(5))
        .or_else(|| avatar_sink.try_pull_preroll(gst::ClockTime::from_seconds(1)))
        .and_then(|s| s.buffer_owned())
        .expect("an avatar frame");
    pipeline.set_state(gst::State::Null).unwrap();
    let info = samples
        .first()
        .map(|s| gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap())
        .expect("frames came out");
    Run {
        frames: samples.iter().map(|s| s.buffer_owned().unwrap()).collect(),
        avatar,
        info,
    }
}

#[test]
fn one_frame_per_25th_of_a_second_with_constant_timestamps() {
    let r = run(4);
    // 50 buffers of 441 samples at 22.05 kHz = 1.0 s of audio.
    assert!(
        (24..=26).contains(&r.frames.len()),
        "{} frames",
        r.frames.len()
    );
    for (n, f) in r.frames.iter().enumerate() {
        assert_eq!(
            f.pts(),
            Some(gst::ClockTime::from_mseconds(40 * n as u64)),
            "frame {n}"
        );
        assert_eq!(f.duration(), Some(gst::ClockTime::from_mseconds(40)));
    }
    assert_eq!((r.info.width(), r.info.height()), (512, 512));
}

#[test]
fn only_the_face_box_is_repainted() {
    let r = run(4);
    let face = FaceInfo::from_buffer(&r.avatar).expect("avatar frames carry the face meta");
    let b = face.face;
    let stride = r.info.stride()[0] as usize;
    let avatar = r.avatar.map_readable().unwrap();
    let mut changed_inside = 0usize;
    for f in &r.frames {
        let map = f.map_readable().unwrap();
        for y in 0..r.info.height() {
            for x in 0..r.info.width() {
                let i = y as usize * stride + x as usize * 4;
                let inside = x >= b.x && x < b.x + b.w && y >= b.y && y < b.y + b.h;
                if inside {
                    changed_inside += (map[i..i + 3] != avatar[i..i + 3]) as usize;
                } else {
                    assert_eq!(
                        &map[i..i + 4],
                        &avatar[i..i + 4],
                        "pixel ({x},{y}) outside {b:?}"
                    );
                }
            }
        }
        // The face meta travels with the frame.
        assert_eq!(FaceInfo::from_buffer(f).map(|i| i.face), Some(b));
    }
    let per_frame = changed_inside / r.frames.len();
    eprintln!(
        "{per_frame} pixels changed per frame inside the {}x{} box",
        b.w, b.h
    );
    assert!(
        per_frame > (b.w * b.h) as usize / 10,
        "only {per_frame} pixels changed"
    );
}

#[test]
fn batch_sizes_give_the_same_frames() {
    let one = run(1);
    let eight = run(8);
    assert_eq!(one.frames.len(), eight.frames.len());
    let mut worst = 0u8;
    for (a, b) in one.frames.iter().zip(&eight.frames) {
        let (a, b) = (a.map_readable().unwrap(), b.map_readable().unwrap());
        for (x, y) in a.iter().zip(b.iter()) {
            worst = worst.max(x.abs_diff(*y));
        }
    }
    // Batched convolutions may sum in another order: allow one level of rounding.
    assert!(worst <= 1, "frames differ by up to {worst} levels");
}

#[test]
fn silence_on_a_photo_is_inferred_once() {
    // Only this test uses batch size 2, so its model (and counter) is its own.
    let count = || -> u64 {
        gstfacecastlipsync::wav2lip_batcher::loaded()
            .iter()
            .filter(|m| m.key().max_batch == 2)
            .map(|m| m.stats.frames.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    setup();
    let before = count();
    let r = run_with(2, "silence");
    let inferred = count() - before;
    assert!((24..=26).contains(&r.frames.len()));
    // The first silent frames are in flight together (batch 2); every later one reuses them.
    assert!(
        inferred <= 2,
        "{inferred} frames inferred for {} silent frames",
        r.frames.len()
    );
    let first = r.frames[0].map_readable().unwrap();
    for f in &r.frames[1..] {
        assert_eq!(f.map_readable().unwrap().as_slice(), first.as_slice());
    }
}

/// 1 s of live audio through `lipsync engine=wav2lip` whose batches wait 200 ms to fill (one
/// stream fills them slowly: a frame every 40 ms), with `frame-budget` ms for each frame. Returns
/// the frames and `frames-repeated`.
/// 1 s of live audio and avatar through `model`, with `lipsync`'s `settings`: the frames,
/// `frames-repeated`, and the `facecast/lipsync-error` messages posted.
fn run_live(
    model: &std::path::Path,
    settings: &str,
) -> (Vec<gst::Buffer>, u64, Vec<gst::Structure>) {
    run_live_wave(model, settings, "saw")
}

/// [`run_live`] with the audio's `wave` (audiotestsrc's: `saw`, `silence`).
fn run_live_wave(
    model: &std::path::Path,
    settings: &str,
    wave: &str,
) -> (Vec<gst::Buffer>, u64, Vec<gst::Structure>) {
    setup();
    let (samples, pipeline, errors) = play(&format!(
        "audiotestsrc is-live=true wave={wave} freq=140 volume=0.5 num-buffers=50 samplesperbuffer=441 \
           ! audio/x-raw,rate=22050,channels=1,format=S16LE ! ls.audio \
         avatarsrc avatar=astronaut is-live=true ! queue ! ls.video \
         lipsync name=ls engine=wav2lip model={} threads=2 {settings} \
           ! appsink name=out sync=false",
        model.display()
    ));
    let repeated = pipeline
        .by_name("ls")
        .unwrap()
        .property::<u64>("frames-repeated");
    pipeline.set_state(gst::State::Null).unwrap();
    let frames = samples.iter().map(|s| s.buffer_owned().unwrap()).collect();
    (frames, repeated, errors)
}

/// A live second in which no frame was ever finished: 25 frames at a steady 40 ms (no gap, no
/// stall), every one counted as repeated, each the avatar frame itself, unchanged.
fn assert_every_frame_repeats_the_avatar(frames: &[gst::Buffer], repeated: u64) {
    assert!((24..=26).contains(&frames.len()), "{} frames", frames.len());
    for (n, f) in frames.iter().enumerate() {
        let expected = frames[0].pts().unwrap() + gst::ClockTime::from_mseconds(40 * n as u64);
        assert_eq!(f.pts(), Some(expected), "frame {n}: no gap, no stall");
    }
    assert_eq!(repeated, frames.len() as u64, "every frame repeated");
    let first = frames[0].map_readable().unwrap();
    for f in &frames[1..] {
        assert_eq!(f.map_readable().unwrap().as_slice(), first.as_slice());
    }
}

#[test]
fn live_frames_whose_batch_fails_repeat_the_previous_one_and_one_error_is_posted() {
    // Every batch fails inside ONNX Runtime (the model rejects real audio at run time).
    let (frames, repeated, errors) = run_live(
        &facecast_testkit::faulty_wav2lip_model(),
        "batch-size=8 batch-wait=20",
    );
    assert_every_frame_repeats_the_avatar(&frames, repeated);
    // One message for the run of failures, saying what failed.
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0].get::<String>("message").unwrap();
    assert!(
        message.contains("inference failed") && message.contains("Gather"),
        "{message}"
    );
}

#[test]
fn live_frames_past_their_budget_repeat_the_previous_one_and_the_stream_goes_on() {
    // A 1 ms budget past each frame's due time, against one batch that gathers for 5 s, far
    // longer than the 1 s of audio: every frame is answered after its deadline, however fast
    // the machine. (With a batch gathering for 1 s, counted from the first frame's submission,
    // the last frames' deadlines fell about when the batch was answered, and a fast run could
    // answer one in time.)
    let model = facecast_testkit::wav2lip_model();
    let (late, repeated, _) = run_live(&model, "batch-size=256 batch-wait=5000 frame-budget=1");
    assert_every_frame_repeats_the_avatar(&late, repeated);
    let first = late[0].map_readable().unwrap();

    // Without a budget the same stream waits for every frame, and they talk.
    let (waited, repeated, _) = run_live(&model, "batch-size=8 batch-wait=200 frame-budget=0");
    assert_eq!(repeated, 0);
    assert!((24..=26).contains(&waited.len()), "{} frames", waited.len());
    let moved = waited
        .iter()
        .filter(|f| f.map_readable().unwrap().as_slice() != first.as_slice())
        .count();
    assert!(moved > waited.len() / 2, "only {moved} frames repainted");
}

#[test]
fn a_silent_frame_answered_after_its_deadline_still_spares_the_next_ones_an_inference() {
    // Every frame misses its 1 ms budget while the first batch gathers for 200 ms. The idle
    // photo's silent output, once it comes, is kept anyway: the frames after it reuse it
    // instead of each going through the model (as on a busy GPU, where that would feed the
    // overload).
    let model = facecast_testkit::wav2lip_model();
    let inferred = || -> u64 {
        gstfacecastlipsync::wav2lip_batcher::loaded()
            .iter()
            .filter(|m| m.key().max_batch == 7 && m.key().path == model)
            .map(|m| m.stats.frames.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    let (frames, repeated, _) = run_live_wave(
        &model,
        "batch-size=7 batch-wait=200 frame-budget=1",
        "silence",
    );
    assert!((24..=26).contains(&frames.len()), "{} frames", frames.len());
    assert!(repeated >= 1, "the first frames were late");
    assert!(
        inferred() <= 14,
        "{} of {} silent frames went through the model",
        inferred(),
        frames.len()
    );
    assert!(
        repeated + 5 <= frames.len() as u64,
        "{repeated} of {} frames repeated: the kept output was not used",
        frames.len()
    );
}

#[test]
fn a_lipsync_with_the_servers_settings_shares_the_model_the_server_loaded() {
    // The server loads its model at start, with its batch workers and GPU frame cache
    // (`[lipsync] workers`, `gpu_frames_mb`), and sets the same on each session's lipsync: the
    // element must then name that model, not load a second copy of it (as it once did with
    // `workers = 2`). Only this test uses batch size 3.
    use facecast_onnx::Device;
    use gstfacecastlipsync::wav2lip_batcher::{loaded, shared, ModelKey};
    setup();
    let model = facecast_testkit::wav2lip_model();
    let mut key = ModelKey::new(&model, Device::Cpu, 3, 8, 2);
    key.workers = 2;
    key.gpu_frames_mb = 64;
    let preloaded = shared(&key).unwrap();
    let (frames, _, _) = run_live_wave(
        &model,
        "batch-size=3 batch-wait=8 workers=2 gpu-frames=64",
        "silence",
    );
    assert!((24..=26).contains(&frames.len()), "{} frames", frames.len());
    let of_batch_3: Vec<_> = loaded()
        .into_iter()
        .filter(|m| m.key().max_batch == 3)
        .collect();
    assert_eq!(
        of_batch_3.len(),
        1,
        "{:?}",
        of_batch_3.iter().map(|m| m.key()).collect::<Vec<_>>()
    );
    assert!(std::sync::Arc::ptr_eq(&of_batch_3[0], &preloaded));
}
