//! `facecast render` end to end: the binary writes an MP4, we decode it and look at the pixels.

mod common;

use facecast_common::AvatarPose;
use gst::prelude::*;
use gstfacecastavatar::render::Renderer;
use std::path::Path;
use std::process::Command;

const SIZE: u32 = 256;

struct Decoded {
    /// RGBA frames.
    frames: Vec<Vec<u8>>,
    audio_secs: f64,
    /// The decoded sound, mono, and its rate.
    samples: Vec<f32>,
    rate: u32,
}

/// Decodes an MP4 that must hold H.264 video and AAC audio.
fn decode(path: &Path) -> Decoded {
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux name=d \
         d.video_0 ! queue ! h264parse ! avdec_h264 ! videoconvert ! video/x-raw,format=RGBA ! appsink name=v sync=false \
         d.audio_0 ! queue ! aacparse ! avdec_aac ! audioconvert ! audio/x-raw,format=F32LE,channels=1 ! appsink name=a sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let frames = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let f = frames.clone();
    pipeline
        .by_name("v")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let s = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let info = gst_video::VideoInfo::from_caps(s.caps().unwrap()).unwrap();
                    assert_eq!((info.width(), info.height()), (SIZE, SIZE));
                    let map = s.buffer().unwrap().map_readable().unwrap();
                    let stride = info.stride()[0] as usize;
                    let mut rgba = Vec::with_capacity((SIZE * SIZE * 4) as usize);
                    for row in map.chunks(stride).take(SIZE as usize) {
                        rgba.extend_from_slice(&row[..(SIZE * 4) as usize]);
                    }
                    f.lock().unwrap().push(rgba);
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    let samples = std::sync::Arc::new(std::sync::Mutex::new((Vec::<f32>::new(), 0u32)));
    let a = samples.clone();
    pipeline
        .by_name("a")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap()
        .set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |s| {
                    let s = s.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    let info = gst_audio::AudioInfo::from_caps(s.caps().unwrap()).unwrap();
                    let mut a = a.lock().unwrap();
                    let map = s.buffer().unwrap().map_readable().unwrap();
                    a.0.extend(
                        map.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                    );
                    a.1 = info.rate();
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
    common::run_to_eos(&pipeline, 120);
    let (samples, rate) = samples.lock().unwrap().clone();
    let frames = frames.lock().unwrap().clone();
    Decoded {
        frames,
        audio_secs: samples.len() as f64 / rate.max(1) as f64,
        samples,
        rate,
    }
}

fn facecast(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_facecast"))
        .args(args)
        .output()
        .expect("facecast runs")
}

/// Pixels of the open mouth's dark inside, in the mouth region (which is where it must be).
fn open_mouth_pixels(rgba: &[u8]) -> usize {
    let r = Renderer::new(SIZE, SIZE)
        .unwrap()
        .face_info(&AvatarPose::default())
        .mouth;
    let mut n = 0;
    for y in r.y..(r.y + r.h).min(SIZE) {
        for x in r.x..(r.x + r.w).min(SIZE) {
            let i = ((y * SIZE + x) * 4) as usize;
            let (red, g, b) = (rgba[i] as i32, rgba[i + 1] as i32, rgba[i + 2] as i32);
            if (45..125).contains(&red) && g < 42 && b < 52 && red > g + 35 {
                n += 1;
            }
        }
    }
    n
}

/// Mean absolute change of the mouth region between two frames.
fn mouth_change(a: &[u8], b: &[u8]) -> f64 {
    let r = Renderer::new(SIZE, SIZE)
        .unwrap()
        .face_info(&AvatarPose::default())
        .mouth;
    let mut sum = 0u64;
    for y in r.y..r.y + r.h {
        for x in r.x..r.x + r.w {
            let i = ((y * SIZE + x) * 4) as usize;
            for c in 0..3 {
                sum += (a[i + c] as i32 - b[i + c] as i32).unsigned_abs() as u64;
            }
        }
    }
    sum as f64 / (r.w * r.h * 3) as f64
}

fn render(extra: &[&str], out: &Path) {
    let size = SIZE.to_string();
    let mut args = vec![
        "render", "--quiet", "--width", &size, "--height", &size, "-o",
    ];
    let out_s = out.to_str().unwrap();
    args.push(out_s);
    args.extend_from_slice(extra);
    let o = facecast(&args);
    assert!(
        o.status.success(),
        "facecast {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn text_renders_to_h264_aac_with_a_moving_mouth() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("hello.mp4");
    render(
        &[
            "--text",
            "Hello! I am your assistant. How can I help you today?",
        ],
        &out,
    );
    let d = decode(&out);
    assert!(d.audio_secs > 2.0, "{} s of audio", d.audio_secs);
    let expected = d.audio_secs * 25.0;
    assert!(
        (d.frames.len() as f64 - expected).abs() <= 2.0,
        "{} frames for {} s",
        d.frames.len(),
        d.audio_secs
    );
    let open: Vec<usize> = d.frames.iter().map(|f| open_mouth_pixels(f)).collect();
    assert!(open.iter().filter(|&&n| n > 50).count() >= 10, "{open:?}");
}

#[test]
fn persian_text_renders() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("salam.mp4");
    render(&["--lang", "fa", "--text", "سلام چطورید؟"], &out);
    let d = decode(&out);
    assert!(d.frames.len() >= 20, "{} frames", d.frames.len());
    let open: Vec<usize> = d.frames.iter().map(|f| open_mouth_pixels(f)).collect();
    assert!(open.iter().filter(|&&n| n > 50).count() >= 3, "{open:?}");
}

#[test]
fn mouth_pixels_move_in_speech_and_rest_in_silence() {
    // 1 s of silence, a sentence, 1 s of silence, as a WAV file (no phoneme events: the mouth
    // comes from the audio analysis).
    let dir = tempfile::tempdir().unwrap();
    let u = gstfacecasttts::espeak::synthesize(
        "Hello, how are you today? I am fine.",
        &Default::default(),
    )
    .unwrap();
    let rate = u.sample_rate;
    let mut samples = vec![0i16; rate as usize];
    samples.extend_from_slice(&u.samples);
    samples.extend(std::iter::repeat_n(0i16, rate as usize));
    let wav = dir.path().join("speech.wav");
    facecast_testkit::write_wav(&wav, rate, &samples);
    let out = dir.path().join("speech.mp4");
    render(&["--audio", wav.to_str().unwrap()], &out);
    let d = decode(&out);
    let wav_secs = samples.len() as f64 / rate as f64;
    assert!(
        (d.frames.len() as f64 - wav_secs * 25.0).abs() <= 1.0,
        "{} frames for {wav_secs} s",
        d.frames.len()
    );

    let speech_end = ((1.0 + u.samples.len() as f64 / rate as f64) * 25.0) as usize;
    let silent: Vec<usize> = (0..22).chain(speech_end + 8..d.frames.len()).collect();
    let speaking: Vec<usize> = (27..speech_end - 2).collect();
    let open: Vec<usize> = d.frames.iter().map(|f| open_mouth_pixels(f)).collect();
    // A closed mouth shows no inside; allow a few stray pixels of H.264 ringing.
    for &i in &silent {
        assert!(open[i] <= 3, "mouth open in silence at frame {i}: {open:?}");
    }
    assert!(
        speaking.iter().filter(|&&i| open[i] > 50).count() >= 8,
        "{open:?}"
    );
    let change = |idx: &[usize]| {
        idx.iter()
            .filter(|&&i| i > 0)
            .map(|&i| mouth_change(&d.frames[i - 1], &d.frames[i]))
            .sum::<f64>()
            / idx.len() as f64
    };
    let (still, moving) = (change(&silent), change(&speaking));
    assert!(
        moving > 3.0 * still,
        "mouth region change: speech {moving:.3}, silence {still:.3}"
    );
}

#[test]
fn bad_input_gives_one_clear_line_and_a_failure_exit() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.mp4");
    let out_s = out.to_str().unwrap();
    let missing = dir.path().join("missing.wav");
    for (args, needle) in [
        (vec!["render", "--text", " ", "-o", out_s], "nothing to say"),
        (
            vec!["render", "--lang", "xx", "--text", "hi", "-o", out_s],
            "no voice for language 'xx'",
        ),
        (
            vec!["render", "--text", "hi", "-o", "/nonexistent-dir/x.mp4"],
            "cannot write output file /nonexistent-dir/x.mp4",
        ),
        (
            vec!["render", "--audio", missing.to_str().unwrap(), "-o", out_s],
            "audio file not found",
        ),
        (
            vec![
                "render",
                "--emotion",
                "furious",
                "--text",
                "hi",
                "-o",
                out_s,
            ],
            "unknown emotion 'furious'",
        ),
    ] {
        let o = facecast(&args);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(!out.exists(), "{args:?} left a partial output file");
    }
}

#[test]
fn a_refused_model_is_explained_and_unnamed_inputs_are_found_by_shape() {
    let model = facecast_testkit::root().join(".cache/models/wav2lip_w025_seed7_renamed.onnx");
    assert!(
        model.is_file(),
        "{} missing: run scripts/fetch-test-assets.sh",
        model.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("renamed.mp4");
    let (model_s, out_s) = (model.to_str().unwrap(), out.to_str().unwrap());
    // Inputs audio_sequences/face_sequences and output out: taken without configuration.
    // No ORT_DYLIB_PATH: the binary finds the set-up's copy of ONNX Runtime itself.
    let base = [
        "render", "--quiet", "--engine", "wav2lip", "--model", model_s,
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_facecast"))
        .args(base)
        .args(["--text", "Hello", "-o", out_s])
        .env_remove("ORT_DYLIB_PATH")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let written = std::fs::metadata(&out).map_or(0, |m| m.len());
    assert!(written > 1000, "{} bytes written", written);
    // A name the user gives must exist, and the CLI says exactly why not.
    let o = facecast(
        &[
            &base[..],
            &["--output-name", "result", "--text", "Hello", "-o", out_s],
        ]
        .concat(),
    );
    assert!(!o.status.success());
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("it has no 'result'") && stderr.contains("[\"out\"]"),
        "{stderr}"
    );
    assert!(!stderr.contains("Could not open resource"), "{stderr}");
    assert!(!out.exists(), "a failed render leaves no file");
}

#[test]
fn the_mouth_is_closed_in_the_pauses_of_the_rendered_mp4() {
    let dir = tempfile::tempdir().unwrap();
    for (name, extra) in [
        (
            "hello",
            &[
                "--text",
                "Hello! I am your assistant. How can I help you today?",
            ][..],
        ),
        (
            "salam",
            &[
                "--lang",
                "fa",
                "--text",
                "سلام، حال شما چطور است؟ من دستیار شما هستم.",
            ][..],
        ),
    ] {
        let out = dir.path().join(format!("{name}.mp4"));
        render(extra, &out);
        let d = decode(&out);
        let pauses = common::inner_pauses(&d.samples, d.rate);
        let resting = common::frames_in_pauses(&pauses, 25.0, d.frames.len());
        assert!(
            resting.len() >= 3,
            "{name}: only {} frames in pauses {pauses:?}",
            resting.len()
        );
        let open: Vec<(usize, usize)> = resting
            .iter()
            .map(|&i| (i, open_mouth_pixels(&d.frames[i])))
            .filter(|&(_, px)| px > 3)
            .collect();
        assert!(
            open.is_empty(),
            "{name}: mouth open in pauses {pauses:?}: (frame, open pixels) {open:?}"
        );
        // And it does open while speaking.
        let speaking = (0..d.frames.len())
            .filter(|i| !resting.contains(i))
            .filter(|&i| open_mouth_pixels(&d.frames[i]) > 20)
            .count();
        assert!(
            speaking >= 5,
            "{name}: mouth open in only {speaking} frames"
        );
    }
}
