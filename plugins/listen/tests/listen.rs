//! `vad` and `asr` on real speech: Piper and espeak-ng voices, silences the test places, the
//! real Silero VAD model and Debian's pocketsphinx; a scripted OpenAI-compatible transcription
//! server for the `openai` engine.

use facecast_common::{TranscriptEvent, UserSpeechEvent};
use gst::prelude::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};

const RATE: usize = 16_000;

fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfacecasttts::plugin_register_static().unwrap();
        gstfacecastlisten::plugin_register_static().unwrap();
    });
}

/// The test Piper voice saying `text`, as 16 kHz mono samples.
fn piper_speech(text: &str) -> Vec<i16> {
    let voice = facecast_testkit::piper_voice();
    speech(
        &format!("speechsynth engine=piper voice={}", voice.display()),
        text,
    )
}

/// `tts` (a speechsynth description) saying `text`, as 16 kHz mono samples.
fn speech(tts: &str, text: &str) -> Vec<i16> {
    init();
    let pipeline = gst::parse::launch(&format!(
        "{tts} text=\"{text}\" ! audioconvert ! audioresample ! \
         audio/x-raw,format=S16LE,rate=16000,channels=1 ! appsink name=out sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let sink = pipeline
        .by_name("out")
        .unwrap()
        .downcast::<gst_app::AppSink>()
        .unwrap();
    pipeline.set_state(gst::State::Playing).unwrap();
    let mut samples = Vec::new();
    while let Ok(sample) = sink.pull_sample() {
        let map = sample.buffer().unwrap().map_readable().unwrap();
        samples.extend(
            map.chunks_exact(2)
                .map(|b| i16::from_le_bytes([b[0], b[1]])),
        );
    }
    pipeline.set_state(gst::State::Null).unwrap();
    samples
}

/// Where the sound in `samples` starts and stops (10 ms windows within 40 dB of the loudest).
fn sound_span(samples: &[i16]) -> (f64, f64) {
    let levels: Vec<f64> = samples
        .chunks(RATE / 100)
        .map(|w| (w.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect();
    let loudest = levels.iter().cloned().fold(0.0, f64::max);
    let first = levels.iter().position(|&l| l > loudest / 100.0).unwrap();
    let last = levels.iter().rposition(|&l| l > loudest / 100.0).unwrap();
    (first as f64 * 0.01, (last + 1) as f64 * 0.01)
}

fn silence(secs: f64) -> Vec<i16> {
    vec![0; (secs * RATE as f64) as usize]
}

#[derive(Default, Debug)]
struct Heard {
    /// Confirmed turns' starts and ends.
    speech: Vec<UserSpeechEvent>,
    /// Possible starts, and those dismissed.
    possible: Vec<UserSpeechEvent>,
    transcripts: Vec<TranscriptEvent>,
    /// Downstream events, in order, as the sink saw them.
    downstream: Vec<String>,
    warnings: Vec<String>,
    /// Buffers that reached the sink after the end of a turn went by.
    buffers_after_a_turn_ended: usize,
}

/// `appsrc name=src` (16 kHz mono) `! vad {vad} {after} ! fakesink name=sink`, and its source.
fn listening_pipeline(vad: &str, after: &str) -> (gst::Pipeline, gst_app::AppSrc) {
    init();
    let pipeline = gst::parse::launch(&format!(
        "appsrc name=src format=time caps=audio/x-raw,format=S16LE,rate=16000,channels=1,layout=interleaved \
         ! vad {vad} {after} ! fakesink name=sink sync=false"
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let src = pipeline
        .by_name("src")
        .unwrap()
        .downcast::<gst_app::AppSrc>()
        .unwrap();
    (pipeline, src)
}

/// Pushes `samples` as 20 ms buffers with their times, those that `sent` keeps (by index),
/// then ends the stream.
fn push(src: &gst_app::AppSrc, samples: &[i16], sent: impl Fn(usize) -> bool) {
    for (i, c) in samples.chunks(RATE / 50).enumerate() {
        if !sent(i) {
            continue;
        }
        let mut bytes = Vec::with_capacity(c.len() * 2);
        c.iter()
            .for_each(|s| bytes.extend_from_slice(&s.to_le_bytes()));
        let mut buffer = gst::Buffer::from_mut_slice(bytes);
        {
            let b = buffer.get_mut().unwrap();
            b.set_pts(gst::ClockTime::from_mseconds(20 * i as u64));
            b.set_duration(gst::ClockTime::from_mseconds(20));
        }
        src.push_buffer(buffer).unwrap();
    }
    src.end_of_stream().unwrap();
}

/// Feeds `samples` through `vad ! {after}` in 20 ms buffers; collects the bus messages and
/// the events that reached the sink.
fn listen(samples: &[i16], vad: &str, after: &str) -> Heard {
    listen_to_buffers(samples, vad, after, |_| true)
}

/// The same, sending only the 20 ms buffers that `sent` keeps (by index), with their times.
fn listen_to_buffers(
    samples: &[i16],
    vad: &str,
    after: &str,
    sent: impl Fn(usize) -> bool,
) -> Heard {
    let (pipeline, src) = listening_pipeline(vad, after);
    let downstream = Arc::new(Mutex::new(Vec::new()));
    let seen = downstream.clone();
    let after_end = Arc::new(Mutex::new(None::<usize>));
    let counted = after_end.clone();
    pipeline
        .by_name("sink")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(
            gst::PadProbeType::EVENT_DOWNSTREAM | gst::PadProbeType::BUFFER,
            move |_, info| {
                match &info.data {
                    Some(gst::PadProbeData::Event(e)) => {
                        if let Some(Ok(UserSpeechEvent::Ended { .. })) = UserSpeechEvent::parse(e) {
                            counted.lock().unwrap().get_or_insert(0);
                        }
                        if let Some(s) = e.structure() {
                            if s.name().starts_with("facecast/") {
                                seen.lock().unwrap().push(s.to_string());
                            }
                        }
                    }
                    Some(gst::PadProbeData::Buffer(_)) => {
                        if let Some(n) = counted.lock().unwrap().as_mut() {
                            *n += 1;
                        }
                    }
                    _ => {}
                }
                gst::PadProbeReturn::Ok
            },
        );
    pipeline.set_state(gst::State::Playing).unwrap();
    push(&src, samples, sent);
    let mut heard = Heard::default();
    let bus = pipeline.bus().unwrap();
    for msg in bus.iter_timed(gst::ClockTime::from_seconds(120)) {
        match msg.view() {
            gst::MessageView::Element(e) => {
                let s = e.structure().unwrap();
                if let Some(Ok(ev)) = UserSpeechEvent::from_structure(s) {
                    match ev {
                        UserSpeechEvent::Possible { .. } | UserSpeechEvent::Dismissed { .. } => {
                            heard.possible.push(ev)
                        }
                        _ => heard.speech.push(ev),
                    }
                } else if let Some(Ok(t)) = TranscriptEvent::from_structure(s) {
                    heard.transcripts.push(t);
                }
            }
            gst::MessageView::Warning(w) => heard.warnings.push(w.error().to_string()),
            gst::MessageView::Eos(_) => break,
            gst::MessageView::Error(e) => {
                pipeline.set_state(gst::State::Null).unwrap();
                panic!("pipeline error: {} ({:?})", e.error(), e.debug())
            }
            _ => {}
        }
    }
    pipeline.set_state(gst::State::Null).unwrap();
    heard.downstream = downstream.lock().unwrap().clone();
    heard.buffers_after_a_turn_ended = after_end.lock().unwrap().unwrap_or(0);
    heard
}

fn secs(t: gst::ClockTime) -> f64 {
    t.nseconds() as f64 / 1e9
}

#[test]
fn vad_marks_speech_within_100ms_of_where_it_is() {
    facecast_testkit::vad_model();
    let said = piper_speech("Could you book a table for two people tomorrow evening");
    let (s, e) = sound_span(&said);
    let mut samples = silence(1.0);
    samples.extend(&said);
    samples.extend(silence(1.5));
    let (onset, offset) = (1.0 + s, 1.0 + e);
    let model = facecast_testkit::vad_model();
    let heard = listen(
        &samples,
        &format!("model={} end-silence-ms=500", model.display()),
        "",
    );
    assert_eq!(heard.speech.len(), 2, "{:?}", heard.speech);
    let UserSpeechEvent::Started { start, from } = heard.speech[0] else {
        panic!("{:?}", heard.speech)
    };
    let UserSpeechEvent::Ended { end, .. } = heard.speech[1] else {
        panic!("{:?}", heard.speech)
    };
    assert!(
        (secs(start) - onset).abs() <= 0.1,
        "start {start} vs sound at {onset:.3} s"
    );
    assert!(
        (secs(end) - offset).abs() <= 0.1,
        "end {end} vs sound stopping at {offset:.3} s"
    );
    assert!(
        (secs(start) - secs(from) - 0.3).abs() < 0.001,
        "pre-roll: {from}"
    );
    // The first frame of that speech was announced as a possible start, before it was
    // confirmed (what barge-in acts on).
    assert_eq!(
        heard.possible.first(),
        Some(&UserSpeechEvent::Possible { start }),
        "{:?}",
        heard.possible
    );
    // The same, in order, downstream.
    assert_eq!(heard.downstream.len(), 3, "{:?}", heard.downstream);
    assert!(heard.downstream[0].contains("confirmed=(boolean)false"));
    assert!(heard.downstream[1].contains("speaking=(boolean)true, confirmed=(boolean)true"));
}

#[test]
fn a_turn_ends_when_the_sender_goes_quiet_with_dtx() {
    // In silence an Opus sender with DTX sends one 20 ms packet every 400 ms: the time
    // between them is silence, and the turn ends on time, not at the end of the stream.
    let said = piper_speech("Book a table for two");
    let (_, e) = sound_span(&said);
    let mut samples = silence(0.5);
    samples.extend(&said);
    samples.extend(silence(4.0));
    let speech_buffers = ((0.5 + e) / 0.02).ceil() as usize;
    let model = facecast_testkit::vad_model();
    let heard = listen_to_buffers(
        &samples,
        &format!("model={} end-silence-ms=600", model.display()),
        "",
        |i| i <= speech_buffers || i % 20 == 0,
    );
    assert_eq!(heard.speech.len(), 2, "{:?}", heard.speech);
    let UserSpeechEvent::Ended { end, .. } = heard.speech[1] else {
        panic!("{:?}", heard.speech)
    };
    assert!(
        (secs(end) - (0.5 + e)).abs() <= 0.1,
        "end {end} vs sound stopping at {:.3} s",
        0.5 + e
    );
    // Decided while the sparse packets still came, not by the end of the stream.
    assert!(
        heard.buffers_after_a_turn_ended >= 5,
        "the turn ended only {} packets before the stream did",
        heard.buffers_after_a_turn_ended
    );
}

#[test]
fn silence_and_noise_are_not_speech() {
    let model = facecast_testkit::vad_model();
    let mut rng = fastrand_like(7);
    let mut samples = silence(2.0);
    // Quiet broadband noise, like a room.
    samples.extend((0..RATE * 2).map(|_| (rng() % 600) as i16 - 300));
    let heard = listen(&samples, &format!("model={}", model.display()), "");
    assert!(heard.speech.is_empty(), "{:?}", heard.speech);
}

/// A tiny deterministic generator (no extra dependency for one test).
fn fastrand_like(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn a_missing_vad_model_says_where_to_get_it() {
    init();
    let pipeline = gst::parse::launch(
        "audiotestsrc num-buffers=5 ! audio/x-raw,format=S16LE,rate=16000,channels=1 \
         ! vad model=/nonexistent/silero_vad.onnx ! fakesink",
    )
    .unwrap();
    assert!(pipeline.set_state(gst::State::Playing).is_err());
    let bus = pipeline.bus().unwrap();
    let msg = bus
        .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
        .expect("an error message");
    let gst::MessageView::Error(e) = msg.view() else {
        unreachable!()
    };
    let text = e.error().to_string();
    assert!(
        text.contains("/nonexistent/silero_vad.onnx") && text.contains("pip download silero-vad"),
        "{text}"
    );
    pipeline.set_state(gst::State::Null).unwrap();
}

/// Words of `said` that are in `heard` (case-insensitive), as a fraction.
fn words_recognised(said: &str, heard: &str) -> f64 {
    let heard: Vec<String> = heard.split_whitespace().map(|w| w.to_lowercase()).collect();
    let said: Vec<String> = said
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .collect();
    said.iter().filter(|w| heard.contains(w)).count() as f64 / said.len() as f64
}

#[test]
fn pocketsphinx_recognises_a_piper_sentence() {
    let model = facecast_testkit::vad_model();
    let text = "I would like to book a table for two people tomorrow";
    let mut samples = silence(0.5);
    samples.extend(piper_speech(text));
    samples.extend(silence(1.0));
    let heard = listen(
        &samples,
        &format!("model={}", model.display()),
        "! asr engine=pocketsphinx",
    );
    let finals: Vec<&TranscriptEvent> = heard.transcripts.iter().filter(|t| t.is_final).collect();
    assert_eq!(
        finals.len(),
        1,
        "{:?} {:?}",
        heard.transcripts,
        heard.warnings
    );
    let share = words_recognised(text, &finals[0].text);
    assert!(
        share >= 0.6,
        "heard {:?} ({share:.2} of the words)",
        finals[0].text
    );
    assert_eq!(finals[0].language, "en");
    // The transcript went downstream too, after the turn's end.
    let last = heard.downstream.last().unwrap();
    assert!(
        last.starts_with("facecast/transcript") && last.contains("final=(boolean)true"),
        "{last}"
    );
}

/// A scripted OpenAI-compatible transcription server on loopback: answers each request with
/// the next of `answers` (status, body), and keeps what it received.
struct Transcriber {
    url: String,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn transcriber(answers: Vec<(&'static str, &'static str, u64)>) -> Transcriber {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let keep = received.clone();
    std::thread::spawn(move || {
        for (status, body, delay_ms) in answers {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut head = String::new();
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut request = vec![0; length];
            reader.read_exact(&mut request).unwrap();
            let mut all = head.into_bytes();
            all.extend(request);
            keep.lock().unwrap().push(all);
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Transcriber { url, received }
}

/// The WAV inside a multipart request, as (rate, samples).
fn wav_in(request: &[u8]) -> (u32, usize) {
    let at = request
        .windows(4)
        .position(|w| w == b"RIFF")
        .expect("a WAV file in the request");
    let reader = hound::WavReader::new(std::io::Cursor::new(&request[at..])).expect("a valid WAV");
    (reader.spec().sample_rate, reader.len() as usize)
}

#[test]
fn openai_engine_posts_each_turn_as_a_wav_and_survives_a_failing_endpoint() {
    let model = facecast_testkit::vad_model();
    let said = piper_speech("What is the weather like today");
    // Two turns; the endpoint fails the first and answers the second.
    let mut samples = silence(0.5);
    samples.extend(&said);
    samples.extend(silence(1.5));
    samples.extend(&said);
    samples.extend(silence(1.5));
    let server = transcriber(vec![
        (
            "500 Internal Server Error",
            r#"{"error":"model not loaded"}"#,
            0,
        ),
        (
            "200 OK",
            r#"{"text":" What is the weather like today?"}"#,
            0,
        ),
    ]);
    let heard = listen(
        &samples,
        &format!("model={}", model.display()),
        &format!(
            "! asr engine=openai base-url={} model=whisper-test language=en-US",
            server.url
        ),
    );
    let received = server.received.lock().unwrap();
    assert_eq!(received.len(), 2);
    let head = String::from_utf8_lossy(&received[1]);
    assert!(head.starts_with("POST /v1/audio/transcriptions"), "{head}");
    assert!(head.contains("whisper-test") && head.contains("name=\"language\"\r\n\r\nen\r\n"));
    let (rate, n) = wav_in(&received[1]);
    assert_eq!(rate, 16_000);
    // The turn: its 300 ms pre-roll, the sound, and 100 ms after it stopped.
    let (s, e) = sound_span(&said);
    let expected = e - s + 0.4;
    let got = n as f64 / RATE as f64;
    assert!(
        (got - expected).abs() <= 0.15,
        "{got:.2} s of audio posted for {expected:.2} s of speech"
    );
    assert!(
        heard.warnings.iter().any(|w| w.contains("500")),
        "{:?}",
        heard.warnings
    );
    let finals: Vec<&str> = heard
        .transcripts
        .iter()
        .filter(|t| t.is_final)
        .map(|t| t.text.as_str())
        .collect();
    assert_eq!(finals, vec!["What is the weather like today?"]);
}

#[test]
fn a_turn_longer_than_the_limit_is_recognised_in_parts() {
    let model = facecast_testkit::vad_model();
    // espeak-ng reading on for about five seconds, with no pause long enough to end the turn.
    let said = speech(
        "speechsynth",
        "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen",
    );
    let mut samples = silence(0.5);
    samples.extend(&said);
    samples.extend(silence(1.0));
    let server = transcriber(vec![
        ("200 OK", r#"{"text":"part one"}"#, 0),
        ("200 OK", r#"{"text":"part two"}"#, 0),
        ("200 OK", r#"{"text":"part three"}"#, 0),
    ]);
    let heard = listen(
        &samples,
        &format!("model={} end-silence-ms=800", model.display()),
        &format!(
            "! asr engine=openai base-url={} max-utterance-secs=2",
            server.url
        ),
    );
    let finals: Vec<&TranscriptEvent> = heard.transcripts.iter().filter(|t| t.is_final).collect();
    let parts = said.len() as f64 / RATE as f64 / 2.0;
    assert!(
        finals.len() >= 2 && finals.len() as f64 <= parts.ceil() + 1.0,
        "{} parts for {:.1} s: {finals:?}",
        finals.len(),
        said.len() as f64 / RATE as f64
    );
    for pair in finals.windows(2) {
        assert_eq!(pair[0].end, pair[1].start, "the parts join up");
    }
    for r in server.received.lock().unwrap().iter() {
        let (_, n) = wav_in(r);
        assert!(n <= 2 * RATE + 1, "a part of {n} samples");
    }
}

#[test]
fn a_pipeline_stopped_while_a_transcript_is_awaited_stops_at_once() {
    // At its end of stream, asr waits (up to its timeout) for the transcripts of the turns it
    // sent. A session that ends meanwhile must not wait with it.
    let model = facecast_testkit::vad_model();
    let said = piper_speech("Is it open today");
    let mut samples = silence(0.5);
    samples.extend(&said);
    // A recogniser that takes 20 s, against a 10 s timeout.
    let server = transcriber(vec![("200 OK", r#"{"text":"Is it open today?"}"#, 20_000)]);
    let (pipeline, src) = listening_pipeline(
        &format!("model={}", model.display()),
        &format!(
            "! asr name=asr engine=openai base-url={} timeout-ms=10000",
            server.url
        ),
    );
    let (eos_tx, eos_rx) = std::sync::mpsc::channel();
    let eos_tx = Mutex::new(eos_tx);
    pipeline
        .by_name("asr")
        .unwrap()
        .static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data {
                if e.type_() == gst::EventType::Eos {
                    let _ = eos_tx.lock().unwrap().send(());
                }
            }
            gst::PadProbeReturn::Ok
        });
    pipeline.set_state(gst::State::Playing).unwrap();
    push(&src, &samples, |_| true);
    // The turn reaches the recogniser, and the end of stream reaches asr, which now waits.
    eos_rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the end of stream reaches asr");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while server.received.lock().unwrap().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the turn never reached the recogniser"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let stopping = std::time::Instant::now();
    pipeline.set_state(gst::State::Null).unwrap();
    let took = stopping.elapsed();
    assert!(
        took < std::time::Duration::from_secs(2),
        "stopping waited {took:?} for the recogniser"
    );
}
