//! speechsynth, avatarsrc and lipsync together in one pipeline, as `facecast render` and the
//! server use them: text → speech (+ phoneme events) → lip-synced avatar frames.

mod common;

use facecast_common::{Blendshape, FaceInfo, PhonemeEvent, Viseme};
use gst::prelude::*;
use std::sync::{Arc, Mutex};

struct Run {
    frames: Vec<gst::Buffer>,
    audio_end: gst::ClockTime,
    phonemes: Vec<PhonemeEvent>,
    /// The speech, mono, as floats, and its rate.
    samples: Vec<f32>,
    rate: u32,
}

/// Speaks `utterances` (fed as text buffers through an appsrc, one after the other) through the
/// three elements and collects what comes out of `lipsync` and of the speech branch.
fn speak(utterances: &[&str]) -> Run {
    speak_with("speechsynth", utterances)
}

/// [`speak`] with `tts` (a `speechsynth` description with its properties).
fn speak_with(tts: &str, utterances: &[&str]) -> Run {
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=text format=time caps=text/x-raw,format=utf8 ! {tts} ! tee name=t \
         t. ! queue ! ls.audio \
         t. ! queue ! appsink name=audio sync=false \
         avatarsrc ! capsfilter caps=video/x-raw,width=192,height=192 ! ls.video \
         lipsync name=ls ! appsink name=video sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let appsrc = pipeline
        .by_name("text")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    for u in utterances {
        appsrc
            .push_buffer(gst::Buffer::from_slice(u.as_bytes().to_vec()))
            .unwrap();
    }
    appsrc.end_of_stream().unwrap();

    let frames = common::collect_buffers(&pipeline, "video");
    let audio = common::collect_buffers(&pipeline, "audio");
    // The phoneme events as lipsync receives them, after tee and queue.
    let phonemes = Arc::new(Mutex::new(Vec::new()));
    let p = phonemes.clone();
    pipeline
        .by_name("ls")
        .unwrap()
        .static_pad("audio")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(ev) = info.event() {
                if let Some(Ok(pe)) = PhonemeEvent::parse(ev) {
                    p.lock().unwrap().push(pe);
                }
            }
            gst::PadProbeReturn::Ok
        });
    common::run_to_eos(&pipeline, 120);
    let frames = frames.lock().unwrap().clone();
    // The speech audio is one gap-free timeline.
    let mut audio_end = gst::ClockTime::ZERO;
    let mut samples = Vec::new();
    let mut rate = 0;
    for b in audio.lock().unwrap().iter() {
        let map = b.map_readable().unwrap();
        samples.extend(
            map.chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f32 / 32768.0),
        );
        let secs = b.duration().unwrap().seconds_f64();
        rate = ((map.len() / 2) as f64 / secs).round() as u32;
        assert_eq!(
            b.pts().unwrap(),
            audio_end,
            "speech audio has a gap or overlap"
        );
        audio_end += b.duration().unwrap();
    }
    let phonemes = phonemes.lock().unwrap().clone();
    Run {
        frames,
        audio_end,
        phonemes,
        samples,
        rate,
    }
}

fn jaw(b: &gst::Buffer) -> f32 {
    FaceInfo::from_buffer(b).unwrap().pose.unwrap().weights[Blendshape::JawOpen]
}

#[test]
fn one_frame_per_frame_time_of_audio_across_two_utterances() {
    let run = speak(&["Hello! I am your assistant.", "How can I help you today?"]);
    let expected = run.audio_end.seconds_f64() * 25.0;
    assert!(
        (run.frames.len() as f64 - expected).abs() <= 1.0,
        "{} frames for {} of audio",
        run.frames.len(),
        run.audio_end
    );
    // PTS strictly increasing, constant duration, no gap anywhere (including the junction of
    // the two utterances).
    for (n, f) in run.frames.iter().enumerate() {
        assert_eq!(f.pts(), Some(gst::ClockTime::from_mseconds(40 * n as u64)));
        assert_eq!(f.duration(), Some(gst::ClockTime::from_mseconds(40)));
    }
    // The second utterance's phonemes arrive too, and the mouth moves in both utterances.
    let junction = run
        .phonemes
        .windows(2)
        .find(|w| w[1].pts < w[0].pts + w[0].duration)
        .map(|w| w[0].pts);
    assert!(junction.is_none(), "phonemes overlap: {junction:?}");
    let half = run.frames.len() / 2;
    let max = |fs: &[gst::Buffer]| fs.iter().map(jaw).fold(0.0f32, f32::max);
    assert!(max(&run.frames[..half]) > 0.3);
    assert!(max(&run.frames[half..]) > 0.3);
}

#[test]
fn a_piper_voice_moves_the_lips() {
    let voice = facecast_testkit::piper_voice();
    let run = speak_with(
        &format!("speechsynth engine=piper voice={}", voice.display()),
        &[
            "Hello! I am your financial assistant.",
            "How can I help you today?",
        ],
    );
    let secs = run.audio_end.seconds_f64();
    assert!((2.0..7.0).contains(&secs), "{secs:.2} s of speech");
    assert!(
        (run.frames.len() as f64 - secs * 25.0).abs() <= 1.0,
        "{} frames for {secs:.2} s",
        run.frames.len()
    );
    assert!(
        run.phonemes.len() >= 30,
        "{} phoneme events",
        run.phonemes.len()
    );
    assert!(run.phonemes.iter().all(|p| p.pts < run.audio_end));
    // The mouth opens and closes again and again, in both sentences. Piper draws its
    // durations at random, and with them how many syllables the jaw runs together: in 40 runs
    // here the jaw opened 5–9 times, 2–6 times in the first half and 2–3 in the second. (It
    // asked for 6 once, the least seen, and failed about one run in 40.)
    let jaws: Vec<f32> = run.frames.iter().map(jaw).collect();
    let openings = |jaws: &[f32]| {
        jaws.windows(2)
            .filter(|w| w[0] < 0.25 && w[1] >= 0.25)
            .count()
    };
    let half = jaws.len() / 2;
    let (first, second) = (openings(&jaws[..half]), openings(&jaws[half..]));
    assert!(
        openings(&jaws) >= 4 && first >= 1 && second >= 1,
        "the jaw opened {} times ({first} and {second} in the two halves): {jaws:?}",
        openings(&jaws)
    );
    assert!(jaws[..half].iter().any(|&j| j > 0.3) && jaws[half..].iter().any(|&j| j > 0.3));
}

/// What the pocketsphinx recogniser (Debian's default US English model) hears in `tts` saying
/// `text`.
fn recognise(tts: &str, text: &str) -> String {
    common::init();
    assert!(
        gst::ElementFactory::find("pocketsphinx").is_some(),
        "the pocketsphinx element is missing: install gstreamer1.0-pocketsphinx and pocketsphinx-en-us (scripts/install-deps.sh)"
    );
    let pipeline = gst::parse::launch(&format!(
        "{tts} text=\"{text}\" ! audioconvert ! audioresample ! pocketsphinx ! fakesink"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let bus = pipeline.bus().unwrap();
    let mut heard = String::new();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(60)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if s.name() == "pocketsphinx" && s.get::<bool>("final").unwrap_or(false) {
                    heard = s.get::<String>("hypothesis").unwrap_or_default();
                }
            }
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => panic!("pipeline error: {}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    heard
}

#[test]
fn a_speech_recogniser_understands_the_piper_voice() {
    let voice = facecast_testkit::piper_voice();
    let text = "hello how are you today i would like to book a table for two people tomorrow";
    let said: Vec<&str> = text.split(' ').collect();
    // Piper's sound is random (its noise scales): one reading may lose a word or two more than
    // the next (a clean-clone run heard 11 of 16 once). Counted over three readings, so that
    // the test measures the voice and not the dice.
    let (mut understood, mut readings) = (0, Vec::new());
    for _ in 0..3 {
        let heard = recognise(
            &format!("speechsynth engine=piper voice={}", voice.display()),
            text,
        );
        understood += heard.split(' ').filter(|w| said.contains(w)).count();
        readings.push(heard);
    }
    eprintln!(
        "pocketsphinx heard {understood} of {} words over three readings",
        3 * said.len()
    );
    // Natural speech: most words come through (espeak-ng's robotic voice fares far worse).
    assert!(
        understood * 10 >= 3 * said.len() * 7,
        "the recogniser heard {readings:?} ({understood} of {} words)",
        3 * said.len()
    );
}

#[test]
fn jaw_peaks_follow_the_open_vowels() {
    let run = speak(&["Papa, are you far away?"]);
    let jaws: Vec<f32> = run.frames.iter().map(jaw).collect();
    let mut checked = 0;
    for e in run
        .phonemes
        .iter()
        .filter(|e| e.viseme == Viseme::AA && e.duration >= gst::ClockTime::from_mseconds(60))
    {
        let (s, end) = (e.pts.seconds_f64(), (e.pts + e.duration).seconds_f64());
        let peak_near = (1..jaws.len() - 1).any(|i| {
            let c = (i as f64 + 0.5) / 25.0;
            c >= s - 0.04
                && c <= end + 0.04
                && jaws[i] > 0.3
                && jaws[i] >= jaws[i - 1]
                && jaws[i] >= jaws[i + 1]
        });
        assert!(
            peak_near,
            "no jaw peak within 40 ms of '{}' ({s:.3}..{end:.3} s): {jaws:?}",
            e.phoneme
        );
        checked += 1;
    }
    assert!(checked >= 2, "{:?}", run.phonemes);
}

#[test]
fn interrupt_stops_speech_within_100ms_and_closes_the_mouth() {
    common::init();
    let pipeline = gst::parse::launch(
        "speechsynth name=tts is-live=true ! tee name=t \
         t. ! queue ! ls.audio \
         t. ! queue ! appsink name=audio sync=false \
         avatarsrc is-live=true ! capsfilter caps=video/x-raw,width=128,height=128 ! ls.video \
         lipsync name=ls ! appsink name=video sync=false",
    )
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let (audio, video) = (
        common::collect_buffers(&pipeline, "audio"),
        common::collect_buffers(&pipeline, "video"),
    );
    // Simulated time: the test clock moves only when the test moves it, so "1.2 s later" is
    // 1.2 s of pipeline time however slow the machine is.
    let clock = gst_check::TestClock::new();
    pipeline.use_clock(Some(&clock));
    pipeline.set_state(gst::State::Playing).unwrap();
    let tts = pipeline.by_name("tts").unwrap();
    let ms = gst::ClockTime::from_mseconds;
    // speechsynth and avatarsrc pace themselves on the clock.
    const LIVE_SOURCES: u32 = 2;
    common::run_clock_to(&clock, LIVE_SOURCES, ms(300));
    tts.emit_by_name::<()>(
        "say",
        &[&"This is a long sentence that keeps going and going so that it can be interrupted in the middle."],
    );
    tts.emit_by_name::<()>("say", &[&"And this queued one must never be heard."]);
    // Synthesis takes wall time, in which simulated time runs on (silence keeps flowing):
    // time the interrupt from the moment the speech starts.
    let loud = |b: &gst::Buffer| {
        b.map_readable()
            .unwrap()
            .chunks_exact(2)
            .any(|s| i16::from_le_bytes([s[0], s[1]]).abs() > 1000)
    };
    let first_loud = || {
        audio
            .lock()
            .unwrap()
            .iter()
            .find(|b| loud(b))
            .and_then(|b| b.pts())
    };
    while first_loud().is_none() {
        assert!(clock.time() < ms(10_000), "no speech within 10 s");
        common::run_clock_to(&clock, LIVE_SOURCES, clock.time() + ms(5));
    }
    common::run_clock_to(&clock, LIVE_SOURCES, first_loud().unwrap() + ms(1200));
    let interrupted_at = clock.time() - pipeline.base_time().unwrap();
    tts.emit_by_name::<()>("interrupt", &[]);
    common::run_clock_to(&clock, LIVE_SOURCES, interrupted_at + ms(1000));
    pipeline.set_state(gst::State::Null).unwrap();

    let audio = audio.lock().unwrap();
    let loud_before = audio
        .iter()
        .any(|b| b.pts().unwrap() < interrupted_at && loud(b));
    assert!(loud_before, "no speech before the interrupt");
    for b in audio
        .iter()
        .filter(|b| b.pts().unwrap() >= interrupted_at + gst::ClockTime::from_mseconds(100))
    {
        let map = b.map_readable().unwrap();
        assert!(
            map.chunks_exact(2)
                .all(|s| i16::from_le_bytes([s[0], s[1]]) == 0),
            "speech at {} ({} after the interrupt)",
            b.pts().unwrap(),
            b.pts().unwrap() - interrupted_at
        );
    }
    assert!(
        audio.last().unwrap().pts().unwrap() > interrupted_at + gst::ClockTime::from_mseconds(500)
    );
    let video = video.lock().unwrap();
    // The sound stops within 100 ms; the lips then relax naturally (attack/release), closed
    // well within a quarter of a second.
    let after: Vec<f32> = video
        .iter()
        .filter(|b| b.pts().unwrap() >= interrupted_at + gst::ClockTime::from_mseconds(250))
        .map(jaw)
        .collect();
    assert!(
        after.len() >= 10,
        "{} frames after the interrupt",
        after.len()
    );
    assert!(
        after.iter().all(|&j| j < 0.05),
        "mouth still open after the interrupt: {after:?}"
    );
}

#[test]
fn live_piper_sentences_follow_each_other_without_a_gap() {
    let voice = facecast_testkit::piper_voice();
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "speechsynth name=tts is-live=true engine=piper voice={} ! appsink name=audio sync=false",
        voice.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let audio = common::collect_buffers(&pipeline, "audio");
    pipeline.set_state(gst::State::Playing).unwrap();
    let tts = pipeline.by_name("tts").unwrap();
    // Three sentences queued at once, as a conversation does: each takes the neural voice a
    // good part of a second to synthesise, so each must be made while the previous one plays.
    for s in [
        "Let me explain how an emergency fund works, step by step.",
        "Most advisers suggest keeping three to six months of expenses aside.",
        "Keep it in an account you can reach quickly, but not too easily.",
    ] {
        tts.emit_by_name::<()>("say", &[&s]);
    }
    let bus = pipeline.bus().unwrap();
    let (mut started, mut ended) = (Vec::new(), Vec::new());
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(30)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                let at = s.get::<u64>("running-time").unwrap();
                match s.name().as_str() {
                    "facecast/speech-started" => started.push(at),
                    "facecast/speech-ended" => ended.push(at),
                    _ => {}
                }
                if ended.len() == 3 {
                    break;
                }
            }
            gst::MessageView::Error(e) => panic!("pipeline error: {}", e.error()),
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    assert_eq!(
        (started.len(), ended.len()),
        (3, 3),
        "not all sentences were spoken"
    );
    for k in 1..3 {
        assert_eq!(
            started[k],
            ended[k - 1],
            "a gap of {} ms before sentence {}",
            (started[k] as i64 - ended[k - 1] as i64) / 1_000_000,
            k + 1
        );
    }
    // The speech is one continuous stream: no buffer in it is marked as a discontinuity.
    let audio = audio.lock().unwrap();
    let speech = gst::ClockTime::from_nseconds(started[0])..gst::ClockTime::from_nseconds(ended[2]);
    let breaks: Vec<_> = audio
        .iter()
        .filter(|b| speech.contains(&b.pts().unwrap()))
        .filter(|b| b.flags().contains(gst::BufferFlags::DISCONT))
        .map(|b| b.pts().unwrap())
        .collect();
    assert!(breaks.is_empty(), "discontinuities at {breaks:?}");
}

/// The mouth closes in every pause of 120 ms or more inside speech: `jawOpen` < 0.05 from
/// 80 ms after the sound stops until 80 ms before the next. Returns how many frames fell there.
fn assert_closed_in_pauses(run: &Run, what: &str) -> usize {
    let pauses = common::inner_pauses(&run.samples, run.rate);
    let resting = common::frames_in_pauses(&pauses, 25.0, run.frames.len());
    let open: Vec<(usize, f32)> = resting
        .iter()
        .map(|&n| (n, jaw(&run.frames[n])))
        .filter(|&(_, j)| j >= 0.05)
        .collect();
    assert!(
        open.is_empty(),
        "{what}: mouth open in pauses {pauses:?}: (frame, jawOpen) {open:?}"
    );
    // Over the clip, the mouth is more open while speaking than in the pauses.
    let speaking: Vec<f32> = (0..run.frames.len())
        .filter(|n| !resting.contains(n))
        .map(|n| jaw(&run.frames[n]))
        .collect();
    let mean = speaking.iter().sum::<f32>() / speaking.len().max(1) as f32;
    assert!(mean > 0.1, "{what}: mean jawOpen while speaking {mean}");
    resting.len()
}

#[test]
fn the_jaw_closes_in_pauses_at_commas_and_full_stops() {
    let run = speak(&["Hello! I am your assistant. How can I help you today?"]);
    let n = assert_closed_in_pauses(&run, "README example");
    assert!(
        n >= 4,
        "only {n} frames in pauses: the pauses were not found"
    );
    let run = speak(&["Well, first, we save; then, we invest. Is that clear?"]);
    let n = assert_closed_in_pauses(&run, "commas");
    assert!(
        n >= 6,
        "only {n} frames in pauses: the pauses were not found"
    );
}

#[test]
fn the_jaw_closes_in_persian_pauses() {
    let run = speak_with(
        "speechsynth language=fa",
        &["سلام، حال شما چطور است؟ من دستیار شما هستم."],
    );
    let n = assert_closed_in_pauses(&run, "Persian");
    assert!(
        n >= 3,
        "only {n} frames in pauses: the pauses were not found"
    );
}

#[test]
fn the_jaw_closes_in_piper_pauses() {
    let voice = facecast_testkit::piper_voice();
    let run = speak_with(
        &format!("speechsynth engine=piper voice={}", voice.display()),
        &["Well. First, we save money; then, we invest it. Finally: we wait, and we see."],
    );
    let n = assert_closed_in_pauses(&run, "Piper");
    assert!(
        n >= 2,
        "only {n} frames in pauses: the pauses were not found"
    );
}
