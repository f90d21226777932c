//! Voice in over WHIP, end to end: a `webrtcbin` client in the test publishes speech (a Piper
//! voice, silences the test places) through a real WebRTC stack on loopback. The session
//! detects the turn, posts it to a scripted transcription server, asks the scripted language
//! model, and speaks the answer.

use super::tests::registry;
use super::*;
use crate::config::Config;
use crate::conversation::scripted::{scripted, sse};
use crate::whip_client::Client;
use std::io::{BufRead, BufReader, Read, Write};

/// `text` in a Piper voice at 48 kHz mono, as the client sends it.
fn spoken(text: &str) -> Vec<i16> {
    let voice = facecast_testkit::piper_voice();
    crate::bench::spoken_48k(text, voice.to_str()).expect("the Piper voice speaks")
}

/// Where sound starts and stops in 48 kHz `samples` (10 ms windows within 40 dB of the peak).
fn sound_span(samples: &[i16]) -> (f64, f64) {
    let levels: Vec<f64> = samples
        .chunks(480)
        .map(|w| (w.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / w.len() as f64).sqrt())
        .collect();
    let loudest = levels.iter().cloned().fold(0.0, f64::max);
    let first = levels.iter().position(|&l| l > loudest / 100.0).unwrap();
    let last = levels.iter().rposition(|&l| l > loudest / 100.0).unwrap();
    (first as f64 * 0.01, (last + 1) as f64 * 0.01)
}

/// A scripted OpenAI-compatible transcription endpoint: answers `text` to every request and
/// hands over each request's bytes.
fn transcriber(text: &'static str) -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut all) = (0, Vec::new());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                all.extend_from_slice(line.as_bytes());
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            all.extend(body);
            let _ = tx.send(all);
            let body = format!(r#"{{"text":"{text}"}}"#);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, rx)
}

async fn next_event(
    rx: &mut broadcast::Receiver<SessionEvent>,
    within: Duration,
    want: impl Fn(&SessionEvent) -> bool,
) -> SessionEvent {
    tokio::time::timeout(within, async {
        loop {
            let ev = rx.recv().await.expect("event stream open");
            if want(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("the event in time")
}

/// What the session's `vad` received and decided: its 10 ms audio levels with their times
/// (what the server itself heard, whatever the network did to the timing), and the
/// `facecast/user-speech` events it sent.
#[derive(Default)]
struct Heard {
    levels: Vec<(f64, f64)>,
    marks: Vec<facecast_common::UserSpeechEvent>,
}

impl Heard {
    /// Where the sound the server received starts and stops (windows within 40 dB of the
    /// loudest), in the session's running time.
    fn sound_span(&self) -> (f64, f64) {
        let loudest = self.levels.iter().map(|l| l.1).fold(0.0, f64::max);
        let loud: Vec<f64> = self
            .levels
            .iter()
            .filter(|l| l.1 > loudest / 100.0)
            .map(|l| l.0)
            .collect();
        (loud[0], loud[loud.len() - 1] + 0.01)
    }
}

fn watch_vad(session: &Session) -> Arc<Mutex<Heard>> {
    // The branch is built when the publisher's media arrives.
    let deadline = Instant::now() + Duration::from_secs(5);
    let vad = loop {
        let found = session
            .pipeline
            .pipeline
            .iterate_recurse()
            .into_iter()
            .flatten()
            .find(|e| e.type_().name() == "FacecastVad");
        if let Some(vad) = found {
            break vad;
        }
        assert!(
            Instant::now() < deadline,
            "no vad for the publisher's audio"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let seen = Arc::new(Mutex::new(Heard::default()));
    let keep = seen.clone();
    vad.static_pad("src").unwrap().add_probe(
        gst::PadProbeType::EVENT_DOWNSTREAM,
        move |_, info| {
            if let Some(gst::PadProbeData::Event(e)) = &info.data {
                if let Some(Ok(s)) = facecast_common::UserSpeechEvent::parse(e) {
                    keep.lock().unwrap().marks.push(s);
                }
            }
            gst::PadProbeReturn::Ok
        },
    );
    let keep = seen.clone();
    vad.static_pad("sink")
        .unwrap()
        .add_probe(gst::PadProbeType::BUFFER, move |_, info| {
            if let Some(gst::PadProbeData::Buffer(b)) = &info.data {
                let pts = b.pts().map(|t| t.nseconds() as f64 / 1e9).unwrap_or(0.0);
                let map = b.map_readable().unwrap();
                let samples: Vec<f64> = map
                    .chunks_exact(2)
                    .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
                    .collect();
                let mut heard = keep.lock().unwrap();
                for (i, w) in samples.chunks(160).enumerate() {
                    let rms = (w.iter().map(|s| s * s).sum::<f64>() / w.len() as f64).sqrt();
                    heard.levels.push((pts + i as f64 * 0.01, rms));
                }
            }
            gst::PadProbeReturn::Ok
        });
    seen
}

/// The two publishing tests measure timing through a real network stack and encoders: on a
/// 2-core machine they run one at a time, not against each other.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn publish_a_question(with_video: bool) {
    let _turn = ONE_AT_A_TIME.lock().await;
    facecast_testkit::vad_model();
    let question = "Could you book a table for two people tomorrow evening";
    let (asr_url, posted) = transcriber(question);
    let llm = scripted(
        "200 OK",
        vec![(0, {
            let mut b = sse(&["Of course. ", "A table for two, tomorrow evening."]);
            b.extend_from_slice(b"data: [DONE]\n\n");
            b
        })],
    )
    .await;
    let mut config = Config {
        models_dir: facecast_testkit::root().join("models"),
        ..Config::default()
    };
    config.asr.base_url = Some(asr_url);
    config.llm.base_url = Some(llm.base_url.clone());
    config.voice_input.end_of_turn_ms = 500;
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    let mut events = session.subscribe();

    let said = tokio::task::spawn_blocking(move || spoken(question))
        .await
        .unwrap();
    let (s, e) = sound_span(&said);
    let mut samples = vec![0i16; 48_000];
    samples.extend(&said);
    samples.extend(vec![0i16; 48_000]);

    let client = Client::new(with_video);
    let offer = client.offer();
    if with_video {
        assert!(offer.contains("H264"), "{offer}");
    }
    let (publisher, answer) = registry.add_publisher(&session.id, &offer).await.unwrap();
    assert_eq!(publisher, "p1");
    // One voice at a time.
    let second = Client::new(false);
    assert!(matches!(
        registry.add_publisher(&session.id, &second.offer()).await,
        Err(SessionError::PublisherExists(_))
    ));
    drop(second);
    let watched = session.clone();
    let (client, _start, spoken_at) = tokio::task::spawn_blocking(move || {
        client.answered(&answer);
        let start = client.send(&samples);
        // The listening branch is built when the first packets arrive, a second before the
        // speech does.
        let spoken_at = watch_vad(&watched);
        (client, start, spoken_at)
    })
    .await
    .unwrap();

    next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::UserSpeechStarted)
    })
    .await;
    let ended = next_event(&mut events, Duration::from_secs(15), |e| {
        matches!(e, SessionEvent::UserSpeechEnded { .. })
    })
    .await;
    let SessionEvent::UserSpeechEnded { duration_ms } = ended else {
        unreachable!()
    };
    let transcript = next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::Transcript { is_final: true, .. })
    })
    .await;
    assert_eq!(
        transcript,
        SessionEvent::Transcript {
            text: question.into(),
            is_final: true,
            language: "en".into()
        }
    );
    // The answer to the question is spoken.
    next_event(
        &mut events,
        Duration::from_secs(10),
        |e| matches!(e, SessionEvent::SpeechStarted { text } if text.contains("Of course")),
    )
    .await;

    // Copied out: the probes take this lock on the streaming thread, which the teardown below
    // waits for.
    let (onset, offset_end, marks) = {
        let heard = spoken_at.lock().unwrap();
        let (onset, end) = heard.sound_span();
        (onset, end, heard.marks.clone())
    };
    let secs = |t: gst::ClockTime| t.nseconds() as f64 / 1e9;
    let (start_at, end_at) = match marks[..] {
        [facecast_common::UserSpeechEvent::Started { start, .. }, facecast_common::UserSpeechEvent::Ended { end, .. }] => {
            (secs(start), secs(end))
        }
        _ => panic!("one turn expected: {marks:?}"),
    };
    assert!(
        (start_at - onset).abs() <= 0.1,
        "speech detected at {start_at:.3} s, it began at {onset:.3} s"
    );
    assert!(
        (end_at - offset_end).abs() <= 0.1,
        "speech ended at {end_at:.3} s, it stopped at {offset_end:.3} s"
    );
    assert!(
        (duration_ms as f64 / 1000.0 - (e - s)).abs() <= 0.2,
        "{duration_ms} ms"
    );
    // The turn reached the recogniser as a WAV of about its length (pre-roll and tail in).
    let request = posted.recv_timeout(Duration::from_secs(1)).unwrap();
    let at = request.windows(4).position(|w| w == b"RIFF").unwrap();
    let wav = hound::WavReader::new(std::io::Cursor::new(&request[at..])).unwrap();
    assert_eq!(wav.spec().sample_rate, 16_000);
    let posted_secs = wav.len() as f64 / 16_000.0;
    assert!(
        (posted_secs - (e - s + 0.4)).abs() <= 0.25,
        "{posted_secs:.2} s posted for {:.2} s of speech",
        e - s
    );
    registry.remove_publisher(&session.id, &publisher).unwrap();
    drop(client);
    registry.end(&session.id, "test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_published_over_whip_is_heard_recognised_and_answered() {
    publish_a_question(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_obs_like_offer_with_h264_video_is_heard_and_its_video_ignored() {
    publish_a_question(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaking_over_the_avatar_interrupts_it() {
    let _turn = ONE_AT_A_TIME.lock().await;
    facecast_testkit::vad_model();
    let (asr_url, _posted) = transcriber("wait a moment");
    let mut config = Config {
        models_dir: facecast_testkit::root().join("models"),
        ..Config::default()
    };
    config.asr.base_url = Some(asr_url);
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    let mut events = session.subscribe();
    let said = tokio::task::spawn_blocking(|| spoken("Wait a moment please"))
        .await
        .unwrap();
    let mut samples = vec![0i16; 48_000];
    samples.extend(&said);
    samples.extend(vec![0i16; 72_000]);
    let client = Client::new(false);
    let offer = client.offer();
    let (_, answer) = registry.add_publisher(&session.id, &offer).await.unwrap();
    let client = tokio::task::spawn_blocking(move || {
        client.answered(&answer);
        client
    })
    .await
    .unwrap();
    session.say(
        "This is a long answer that goes on and on, so that there is plenty of time to \
         interrupt it in the middle of what it is saying, and then some more.",
        None,
    );
    next_event(&mut events, Duration::from_secs(5), |e| {
        matches!(e, SessionEvent::SpeechStarted { .. })
    })
    .await;
    let client = tokio::task::spawn_blocking(move || {
        client.send(&samples);
        client
    })
    .await
    .unwrap();
    let barge = next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::BargeIn { .. })
    })
    .await;
    let SessionEvent::BargeIn { after_ms } = barge else {
        unreachable!()
    };
    assert!(
        after_ms <= 300,
        "barge-in {after_ms} ms after the speech began"
    );
    next_event(&mut events, Duration::from_secs(2), |e| {
        matches!(
            e,
            SessionEvent::SpeechEnded {
                interrupted: true,
                ..
            }
        )
    })
    .await;
    // With no language model, the heard question is shown and its refusal explained.
    let transcript = next_event(&mut events, Duration::from_secs(10), |e| {
        matches!(e, SessionEvent::Transcript { is_final: true, .. })
    })
    .await;
    assert!(matches!(transcript, SessionEvent::Transcript { text, .. } if text == "wait a moment"));
    let error = next_event(&mut events, Duration::from_secs(2), |e| {
        matches!(e, SessionEvent::Error { .. })
    })
    .await;
    assert!(
        matches!(error, SessionEvent::Error { message } if message.starts_with("chat_unavailable"))
    );
    assert_eq!(registry.metrics.barge_ins.get(), 1);
    drop(client);
    registry.end(&session.id, "test over");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_that_vanishes_without_delete_is_dropped() {
    let _turn = ONE_AT_A_TIME.lock().await;
    facecast_testkit::vad_model();
    let config = Config {
        models_dir: facecast_testkit::root().join("models"),
        ..Config::default()
    };
    let registry = registry(config);
    let session = registry.create(CreateSession::default()).await.unwrap();
    let mut events = session.subscribe();
    let client = Client::new(false);
    let offer = client.offer();
    let (publisher, answer) = registry.add_publisher(&session.id, &offer).await.unwrap();
    let client = tokio::task::spawn_blocking(move || {
        client.answered(&answer);
        client.send(&vec![0i16; 48_000]);
        client
    })
    .await
    .unwrap();
    assert_eq!(
        session.info().publisher.as_deref(),
        Some(publisher.as_str())
    );
    // Gone without a DELETE (a closed tab, a crashed OBS).
    drop(client);
    let left = next_event(&mut events, Duration::from_secs(40), |e| {
        matches!(e, SessionEvent::PublisherLeft { .. })
    })
    .await;
    assert_eq!(left, SessionEvent::PublisherLeft { publisher });
    assert_eq!(session.info().publisher, None);
    assert_eq!(registry.metrics.publishers.get(), 0);
    // The session keeps running, and takes a new publisher.
    assert!(registry.get(&session.id).is_ok());
    registry.end(&session.id, "test over");
}
