//! `lipsync` alone, driven through two `gst_check::Harness`es (one per sink pad): real avatar
//! frames on `video`, real espeak-ng speech (with or without its phoneme events) on `audio`.

use facecast_common::{Blendshape, Emotion, EmotionEvent, FaceInfo, PhonemeEvent, Viseme};
use gst::prelude::*;
use gst_check::Harness;
use gstfacecastavatar::idle::IdleAnimator;
use gstfacecastavatar::render::Renderer;
use gstfacecasttts::espeak::{self, VoiceParams};

const FPS: u64 = 25;
const SIZE: u32 = 192;
const FRAME: gst::ClockTime = gst::ClockTime::from_mseconds(40);

fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfacecastlipsync::plugin_register_static().unwrap();
    });
}

/// What goes into the audio pad, in order.
enum AudioItem {
    Event(gst::Event),
    /// Mono S16 samples at `RATE` starting at `pts`.
    Samples(gst::ClockTime, Vec<i16>),
}

const RATE: u32 = 22050;

fn samples_to_time(n: u64) -> gst::ClockTime {
    gst::ClockTime::from_nseconds(n * 1_000_000_000 / RATE as u64)
}

/// Speech as `speechsynth` sends it: phoneme events before the chunk in which they start.
fn speech(
    text: &str,
    at_sample: u64,
    with_events: bool,
) -> (Vec<AudioItem>, Vec<PhonemeEvent>, u64) {
    let u = espeak::synthesize(text, &VoiceParams::default()).unwrap();
    assert_eq!(u.sample_rate, RATE);
    let total = u.samples.len() as u64;
    let events: Vec<PhonemeEvent> = u
        .phonemes
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let end = u.phonemes.get(i + 1).map_or(total, |n| n.sample);
            PhonemeEvent {
                pts: samples_to_time(at_sample + p.sample),
                duration: samples_to_time(end - p.sample),
                phoneme: p.ipa.clone(),
                viseme: Viseme::from_ipa(&p.ipa),
            }
        })
        .collect();
    let mut items = Vec::new();
    let mut next = 0;
    for (i, chunk) in u.samples.chunks(1024).enumerate() {
        let start = (i * 1024) as u64;
        while with_events
            && next < events.len()
            && u.phonemes[next].sample < start + chunk.len() as u64
        {
            items.push(AudioItem::Event(events[next].to_event()));
            next += 1;
        }
        items.push(AudioItem::Samples(
            samples_to_time(at_sample + start),
            chunk.to_vec(),
        ));
    }
    (items, events, total)
}

fn silence(at_sample: u64, n: u64) -> Vec<AudioItem> {
    (0..n)
        .step_by(1024)
        .map(|s| {
            let len = 1024.min(n - s) as usize;
            AudioItem::Samples(samples_to_time(at_sample + s), vec![0; len])
        })
        .collect()
}

fn audio_buffer(pts: gst::ClockTime, samples: &[i16]) -> gst::Buffer {
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    let mut b = gst::Buffer::from_mut_slice(bytes);
    let r = b.get_mut().unwrap();
    r.set_pts(pts);
    r.set_duration(samples_to_time(samples.len() as u64));
    b
}

/// Runs `lipsync` over `audio` with a live-looking parametric avatar and returns its frames.
fn run(audio: Vec<AudioItem>, audio_secs: f64) -> Vec<gst::Buffer> {
    init();
    let mut h_audio = Harness::with_padnames("lipsync", Some("audio"), Some("src"));
    let element = h_audio.element().unwrap();
    let mut h_video = Harness::with_element(&element, Some("video"), None);
    h_audio.set_src_caps(
        gst_audio::AudioCapsBuilder::new_interleaved()
            .format(gst_audio::AUDIO_FORMAT_S16)
            .rate(RATE as i32)
            .channels(1)
            .build(),
    );
    let video_caps = gst_video::VideoCapsBuilder::new()
        .format(gst_video::VideoFormat::Rgba)
        .width(SIZE as i32)
        .height(SIZE as i32)
        .framerate(gst::Fraction::new(FPS as i32, 1))
        .build();
    h_video.set_src_caps(video_caps);
    h_audio.play();

    let n_video = (audio_secs * FPS as f64).ceil() as u64 + 10;
    let video = std::thread::spawn(move || {
        let mut renderer = Renderer::new(SIZE, SIZE).unwrap();
        let mut idle = IdleAnimator::new(5);
        for n in 0..n_video {
            let pts = FRAME * n;
            let pose = idle.pose_at(pts.seconds_f32());
            let mut buffer = gst::Buffer::with_size((SIZE * SIZE * 4) as usize).unwrap();
            {
                let b = buffer.get_mut().unwrap();
                b.set_pts(pts);
                b.set_duration(FRAME);
                let mut map = b.map_writable().unwrap();
                assert!(renderer.render_into(&pose, map.as_mut_slice(), (SIZE * 4) as usize));
                drop(map);
                renderer.face_info(&pose).attach(b);
            }
            if h_video.push(buffer).is_err() {
                break;
            }
        }
        h_video.push_event(gst::event::Eos::new());
        h_video
    });
    for item in audio {
        match item {
            AudioItem::Event(e) => assert!(h_audio.push_event(e)),
            AudioItem::Samples(pts, s) => {
                h_audio.push(audio_buffer(pts, &s)).unwrap();
            }
        }
    }
    h_audio.push_event(gst::event::Eos::new());
    let mut frames = Vec::new();
    while let Some(b) = h_audio.pull_until_eos().unwrap() {
        frames.push(b);
    }
    let _h_video = video.join().unwrap();
    frames
}

fn jaw(frame: &gst::Buffer) -> f32 {
    FaceInfo::from_buffer(frame)
        .and_then(|f| f.pose)
        .expect("output frames carry the pose they show")
        .weights[Blendshape::JawOpen]
}

fn assert_timing(frames: &[gst::Buffer], audio_secs: f64) {
    let expected = audio_secs * FPS as f64;
    assert!(
        (frames.len() as f64 - expected).abs() <= 1.0,
        "{} frames for {audio_secs:.3} s of audio (expected {expected:.1} ± 1)",
        frames.len()
    );
    for (n, f) in frames.iter().enumerate() {
        assert_eq!(f.pts(), Some(FRAME * n as u64), "frame {n} PTS");
        assert_eq!(f.duration(), Some(FRAME), "frame {n} duration");
    }
}

#[test]
fn silence_keeps_the_mouth_closed_on_every_frame() {
    let n = RATE as u64 * 2;
    let frames = run(silence(0, n), 2.0);
    assert_timing(&frames, 2.0);
    for (i, f) in frames.iter().enumerate() {
        assert!(jaw(f) < 0.05, "frame {i} jawOpen {}", jaw(f));
    }
}

#[test]
fn vowels_open_the_jaw_on_their_phonemes() {
    let (items, events, total) = speech("Papa, father, are you far away?", 0, true);
    let secs = total as f64 / RATE as f64;
    let frames = run(items, secs);
    assert_timing(&frames, secs);
    let jaws: Vec<f32> = frames.iter().map(jaw).collect();
    let max = jaws.iter().cloned().fold(0.0, f32::max);
    assert!(max > 0.3, "jaw never opens past 0.3: {jaws:?}");

    // Every open vowel long enough to be seen has a jaw peak (a local maximum above 0.3)
    // within one frame (40 ms) of the phoneme's span.
    let mut checked = 0;
    for e in events.iter().filter(|e| {
        matches!(e.viseme, Viseme::AA) && e.duration >= gst::ClockTime::from_mseconds(60)
    }) {
        let (s, end) = (
            e.pts.nseconds() as f64 / 1e9,
            (e.pts + e.duration).nseconds() as f64 / 1e9,
        );
        let centre = |i: usize| (i as f64 + 0.5) / FPS as f64;
        let is_peak = |i: usize| {
            jaws[i] > 0.3
                && (i == 0 || jaws[i] >= jaws[i - 1])
                && (i + 1 == jaws.len() || jaws[i] >= jaws[i + 1])
        };
        let found = (0..jaws.len())
            .filter(|&i| centre(i) >= s - 0.04 && centre(i) <= end + 0.04)
            .any(is_peak);
        assert!(
            found,
            "'{}' spans {s:.3}..{end:.3} s but no jaw peak lies within 40 ms of it: {:?}",
            e.phoneme,
            jaws.iter()
                .enumerate()
                .map(|(i, j)| format!("{:.2}:{j:.2}", centre(i)))
                .collect::<Vec<_>>()
        );
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected several long open vowels, found {checked}"
    );
}

#[test]
fn audio_without_phoneme_events_still_moves_the_lips() {
    let lead = RATE as u64; // 1 s of silence, speech, 1 s of silence.
    let (speech_items, _, total) = speech("Hello, how are you today?", lead, false);
    let mut items = silence(0, lead);
    items.extend(speech_items);
    items.extend(silence(lead + total, RATE as u64));
    let secs = (2 * RATE as u64 + total) as f64 / RATE as f64;
    let frames = run(items, secs);
    assert_timing(&frames, secs);
    let jaws: Vec<f32> = frames.iter().map(jaw).collect();
    let speech_frames = &jaws[25..25 + (total as f64 / RATE as f64 * 25.0) as usize];
    assert!(
        speech_frames.iter().cloned().fold(0.0, f32::max) > 0.3,
        "{jaws:?}"
    );
    // Moves, not held open: many frame-to-frame changes during speech.
    let moves = speech_frames
        .windows(2)
        .filter(|w| (w[1] - w[0]).abs() > 0.05)
        .count();
    assert!(moves >= 5, "{jaws:?}");
    assert!(jaws[..20].iter().all(|&j| j < 0.05), "{jaws:?}");
    assert!(
        jaws[jaws.len() - 15..].iter().all(|&j| j < 0.05),
        "{jaws:?}"
    );
}

#[test]
fn two_utterances_with_a_gap_give_continuous_frames() {
    let (first, _, n1) = speech("One.", 0, true);
    // The second utterance starts 0.5 s after the first ends: a gap with no buffers.
    let gap = RATE as u64 / 2;
    let (second, _, n2) = speech("Two.", n1 + gap, true);
    let mut items = first;
    items.extend(second);
    let secs = (n1 + gap + n2) as f64 / RATE as f64;
    let frames = run(items, secs);
    assert_timing(&frames, secs);
    // Through the gap the mouth rests.
    let gap_mid = ((n1 + gap / 2) as f64 / RATE as f64 * FPS as f64) as usize;
    assert!(jaw(&frames[gap_mid + 1]) < 0.05);
}

#[test]
fn emotion_events_ease_into_the_expression() {
    let mut items = vec![AudioItem::Event(
        EmotionEvent {
            emotion: Emotion::Happy,
            intensity: 1.0,
        }
        .to_event(),
    )];
    items.extend(silence(0, RATE as u64 * 2));
    let frames = run(items, 2.0);
    let smile: Vec<f32> = frames
        .iter()
        .map(|f| {
            FaceInfo::from_buffer(f).unwrap().pose.unwrap().weights[Blendshape::MouthSmileLeft]
        })
        .collect();
    assert!(smile[0] < 0.2, "jumps instead of easing in: {smile:?}");
    assert!(smile[smile.len() - 1] > 0.6, "{smile:?}");
    assert!(smile.windows(2).all(|w| w[1] >= w[0] - 1e-6));
}

#[test]
fn audio_caps_it_cannot_take_are_refused() {
    init();
    let mut h = Harness::with_padnames("lipsync", Some("audio"), Some("src"));
    let bad = gst::Caps::builder("audio/x-raw")
        .field("format", "S8")
        .field("layout", "interleaved")
        .field("rate", 8000)
        .field("channels", 1)
        .build();
    h.play();
    assert!(!h
        .element()
        .unwrap()
        .static_pad("audio")
        .unwrap()
        .query_accept_caps(&bad));
    let good = gst_audio::AudioCapsBuilder::new_interleaved()
        .format(gst_audio::AUDIO_FORMAT_F32)
        .rate(48000)
        .channels(2)
        .build();
    assert!(h
        .element()
        .unwrap()
        .static_pad("audio")
        .unwrap()
        .query_accept_caps(&good));
}
