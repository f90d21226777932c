//! `speechsynth` alone, through `gst_check::Harness`.

use facecast_common::{EmotionEvent, PhonemeEvent, Viseme};
use gst::prelude::*;
use gst_check::Harness;

fn init() {
    use std::sync::Once;
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        gst::init().unwrap();
        gstfacecasttts::plugin_register_static().unwrap();
    });
}

fn text_caps() -> gst::Caps {
    gst::Caps::builder("text/x-raw")
        .field("format", "utf8")
        .build()
}

fn text_buffer(text: &str) -> gst::Buffer {
    gst::Buffer::from_slice(text.as_bytes().to_vec())
}

/// Pulls events until EOS, then every buffer (the harness keeps them in separate queues).
fn drain(h: &mut Harness) -> (Vec<PhonemeEvent>, Vec<EmotionEvent>, Vec<gst::Buffer>) {
    let (mut phonemes, mut emotions, mut buffers) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        let ev = h.pull_event().expect("EOS arrives");
        if let Some(p) = PhonemeEvent::parse(&ev) {
            phonemes.push(p.unwrap());
        } else if let Some(e) = EmotionEvent::parse(&ev) {
            emotions.push(e.unwrap());
        } else if ev.type_() == gst::EventType::Eos {
            break;
        }
    }
    while let Some(b) = h.try_pull() {
        buffers.push(b);
    }
    (phonemes, emotions, buffers)
}

fn audio_end(buffers: &[gst::Buffer]) -> gst::ClockTime {
    let last = buffers.last().unwrap();
    last.pts().unwrap() + last.duration().unwrap()
}

#[test]
fn speaks_text_buffers_with_phoneme_events_and_contiguous_timestamps() {
    init();
    let mut h = Harness::new("speechsynth");
    h.set_src_caps(text_caps());
    h.play();
    h.push(text_buffer("hello how are you")).unwrap();
    h.push(text_buffer("I am fine.")).unwrap();
    h.push_event(gst::event::Eos::new());
    let (phonemes, _, buffers) = drain(&mut h);

    let caps = h.sinkpad().unwrap().current_caps().unwrap();
    let info = gst_audio::AudioInfo::from_caps(&caps).unwrap();
    assert_eq!((info.rate(), info.channels()), (22050, 1));
    assert_eq!(info.format(), gst_audio::AUDIO_FORMAT_S16);

    // Audio is one gap-free timeline across both utterances.
    let mut expected = gst::ClockTime::ZERO;
    for b in &buffers {
        assert_eq!(b.pts(), Some(expected));
        assert_eq!(b.offset_end() - b.offset(), b.size() as u64 / 2);
        expected = b.pts().unwrap() + b.duration().unwrap();
    }
    let secs = audio_end(&buffers).seconds_f64();
    assert!((1.2..3.5).contains(&secs), "{secs} s");

    // "hello how are you": phonemes at espeak-ng's positions (h @ ~11 ms, …), in order,
    // covering both utterances, with visemes.
    assert!(phonemes.len() >= 15, "{phonemes:?}");
    assert!(phonemes.windows(2).all(|w| w[0].pts <= w[1].pts));
    assert!(
        phonemes[0].pts < gst::ClockTime::from_mseconds(60),
        "{:?}",
        phonemes[0]
    );
    assert_eq!(phonemes[0].viseme, Viseme::from_ipa(&phonemes[0].phoneme));
    assert!(phonemes.iter().any(|p| p.viseme == Viseme::AA));
    assert!(phonemes
        .iter()
        .all(|p| p.pts + p.duration <= audio_end(&buffers)));
    // The second utterance's phonemes follow the first's audio.
    let last = phonemes.last().unwrap();
    assert!(last.pts > gst::ClockTime::from_mseconds(900), "{last:?}");
}

#[test]
fn text_property_speaks_then_ends_when_the_sink_is_unlinked() {
    init();
    let element = gst::ElementFactory::make("speechsynth")
        .property("text", "سلام چطورید؟")
        .property("language", "fa")
        .build()
        .unwrap();
    let mut h = Harness::with_element(&element, None, Some("src"));
    h.play();
    let (phonemes, _, buffers) = drain(&mut h);
    let secs = audio_end(&buffers).seconds_f64();
    assert!((0.6..2.0).contains(&secs), "Persian utterance of {secs} s");
    assert!(phonemes.len() >= 10, "{phonemes:?}");
    // Duration is known once the text is synthesised.
    assert_eq!(
        element.query_duration::<gst::ClockTime>(),
        Some(audio_end(&buffers))
    );
}

#[test]
fn unknown_language_and_empty_text_are_element_errors() {
    init();
    for (prop, value, needle) in [
        (
            "language",
            "xx-nonexistent",
            "no voice for language 'xx-nonexistent'",
        ),
        ("text", "   ", "text property is empty"),
    ] {
        let element = gst::ElementFactory::make("speechsynth")
            .property(prop, value)
            .build()
            .unwrap();
        let pipeline = gst::Pipeline::new();
        let sink = gst::ElementFactory::make("fakesink").build().unwrap();
        pipeline.add_many([&element, &sink]).unwrap();
        element.link(&sink).unwrap();
        assert!(pipeline.set_state(gst::State::Paused).is_err());
        let bus = pipeline.bus().unwrap();
        let msg = bus
            .timed_pop_filtered(gst::ClockTime::from_seconds(5), &[gst::MessageType::Error])
            .expect("an error message");
        let gst::MessageView::Error(err) = msg.view() else {
            unreachable!()
        };
        assert!(err.error().to_string().contains(needle), "{}", err.error());
        pipeline.set_state(gst::State::Null).unwrap();
    }
}

#[test]
fn say_push_emotion_and_interrupt_signals() {
    init();
    let element = gst::ElementFactory::make("speechsynth").build().unwrap();
    let mut h = Harness::with_element(&element, None, Some("src"));
    h.play();
    assert!(element.emit_by_name::<bool>("push-emotion", &[&"happy", &0.8f64]));
    assert!(!element.emit_by_name::<bool>("push-emotion", &[&"furious", &0.8f64]));
    let src = element.static_pad("src").unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let probe = src
        .add_probe(
            gst::PadProbeType::BLOCK | gst::PadProbeType::BUFFER,
            move |_, _| {
                let _ = tx.send(());
                gst::PadProbeReturn::Ok
            },
        )
        .unwrap();
    element.emit_by_name::<()>(
        "say",
        &[&"This sentence is long enough to be interrupted somewhere in the middle of it."],
    );
    rx.recv().unwrap();
    // Interrupt while the first buffer of speech is on its way: the rest is dropped.
    element.emit_by_name::<()>("interrupt", &[]);
    element.emit_by_name::<()>("say", &[&"Short."]);
    src.remove_probe(probe);
    // No upstream element: end the text stream on the sink pad itself.
    assert!(element
        .static_pad("sink")
        .unwrap()
        .send_event(gst::event::Eos::new()));
    let (phonemes, emotions, buffers) = drain(&mut h);
    assert_eq!(emotions.len(), 1);
    assert_eq!(emotions[0].emotion, facecast_common::Emotion::Happy);
    let secs = audio_end(&buffers).seconds_f64();
    assert!(secs < 3.0, "interrupted speech still lasts {secs} s");
    // Still contiguous after the interruption.
    let mut expected = gst::ClockTime::ZERO;
    for b in &buffers {
        assert_eq!(b.pts(), Some(expected));
        expected += b.duration().unwrap();
    }
    assert!(!phonemes.is_empty());
}
