//! The `pocketsphinx` recogniser: Debian's GStreamer `pocketsphinx` element with its default
//! US English model, one small pipeline per turn (`appsrc ! pocketsphinx ! fakesink`), fed as
//! the turn goes on so that partial hypotheses appear while the person speaks.

use super::imp::{Heard, Report};
use gst::prelude::*;
use gst::ClockTime;
use std::sync::{Arc, Mutex};

pub struct PocketsphinxRecognizer {
    report: Report,
    language: String,
    current: Option<Turn>,
}

struct Turn {
    pipeline: gst::Pipeline,
    src: gst_app::AppSrc,
    start: ClockTime,
    /// Set at the end: the final hypothesis then reports this span.
    end: Arc<Mutex<ClockTime>>,
}

/// Whether the element and its model are installed.
pub fn available() -> Result<(), String> {
    gst::ElementFactory::find("pocketsphinx").map(|_| ()).ok_or_else(|| {
        "the pocketsphinx element is missing: install gstreamer1.0-pocketsphinx and pocketsphinx-en-us (scripts/install-deps.sh), or configure an OpenAI-compatible transcription endpoint (FACECAST_ASR_BASE_URL)".into()
    })
}

impl PocketsphinxRecognizer {
    pub fn new(language: String, report: Report) -> Self {
        Self {
            report,
            language,
            current: None,
        }
    }

    fn start_turn(&self, start: ClockTime) -> Result<Turn, String> {
        available()?;
        let pipeline = gst::Pipeline::with_name("asr-pocketsphinx");
        let caps = gst_audio::AudioCapsBuilder::new_interleaved()
            .format(gst_audio::AudioFormat::S16le)
            .rate(16_000)
            .channels(1)
            .build();
        let src = gst_app::AppSrc::builder()
            .caps(&caps)
            .format(gst::Format::Time)
            .is_live(false)
            .build();
        let ps = gst::ElementFactory::make("pocketsphinx")
            .build()
            .map_err(|e| e.to_string())?;
        let sink = gst::ElementFactory::make("fakesink")
            .property("sync", false)
            .build()
            .map_err(|e| e.to_string())?;
        pipeline
            .add_many([src.upcast_ref(), &ps, &sink])
            .map_err(|e| e.to_string())?;
        gst::Element::link_many([src.upcast_ref(), &ps, &sink]).map_err(|e| e.to_string())?;

        let end = Arc::new(Mutex::new(start));
        let report = self.report.clone();
        let language = self.language.clone();
        let turn_end = end.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let bus = pipeline.bus().expect("a pipeline has a bus");
        bus.set_sync_handler(move |_, msg| {
            use std::sync::atomic::Ordering;
            let deliver_final = |text: String| {
                if !done.swap(true, Ordering::SeqCst) {
                    report.deliver(Ok(Heard {
                        text,
                        is_final: true,
                        language: language.clone(),
                        start,
                        end: *turn_end.lock().unwrap(),
                    }));
                }
            };
            match msg.view() {
                gst::MessageView::Element(e) => {
                    if let Some(s) = e.structure().filter(|s| s.name() == "pocketsphinx") {
                        let text = s.get::<String>("hypothesis").unwrap_or_default();
                        if s.get::<bool>("final").unwrap_or(false) {
                            deliver_final(text);
                        } else if !text.is_empty() && !done.load(Ordering::SeqCst) {
                            report.partial(Heard {
                                text,
                                is_final: false,
                                language: language.clone(),
                                start,
                                end: *turn_end.lock().unwrap(),
                            });
                        }
                    }
                }
                // Nothing was recognised: the turn still gets its (empty) final result.
                gst::MessageView::Eos(_) => deliver_final(String::new()),
                gst::MessageView::Error(e) if !done.swap(true, Ordering::SeqCst) => {
                    report.deliver(Err(format!("pocketsphinx failed: {}", e.error())));
                }
                _ => (),
            }
            // EOS and errors stay on the bus for the teardown to wait for; the rest is done.
            match msg.type_() {
                gst::MessageType::Eos | gst::MessageType::Error => gst::BusSyncReply::Pass,
                _ => gst::BusSyncReply::Drop,
            }
        });
        // Loading the model takes a few hundred milliseconds: not on the streaming thread.
        // The turn's audio waits in appsrc meanwhile.
        let starting = pipeline.clone();
        let failed = self.report.clone();
        std::thread::spawn(move || {
            if let Err(e) = starting.set_state(gst::State::Playing) {
                failed.deliver(Err(format!("cannot start pocketsphinx: {e}")));
            }
        });
        Ok(Turn {
            pipeline,
            src,
            start,
            end,
        })
    }

    pub fn begin(&mut self, start: ClockTime, samples: &[i16]) {
        self.finish_previous();
        match self.start_turn(start) {
            Ok(turn) => {
                self.current = Some(turn);
                self.audio(samples);
            }
            Err(e) => self.report.deliver(Err(e)),
        }
    }

    pub fn audio(&mut self, samples: &[i16]) {
        let Some(turn) = self.current.as_ref() else {
            return;
        };
        if samples.is_empty() {
            return;
        }
        let mut bytes = Vec::with_capacity(samples.len() * 2);
        for s in samples {
            bytes.extend_from_slice(&s.to_le_bytes());
        }
        let _ = turn.src.push_buffer(gst::Buffer::from_mut_slice(bytes));
    }

    /// Returns whether a result will be reported.
    pub fn end(&mut self, end: ClockTime) -> bool {
        let Some(turn) = self.current.as_ref() else {
            return false;
        };
        *turn.end.lock().unwrap() = end.max(turn.start);
        turn.src.end_of_stream().is_ok()
    }

    /// Stops the last turn's pipeline (its result has been, or is being, reported).
    fn finish_previous(&mut self) {
        if let Some(turn) = self.current.take() {
            // Not from the streaming thread of that pipeline: this is the caller's thread.
            std::thread::spawn(move || {
                let bus = turn.pipeline.bus().unwrap();
                // The final hypothesis comes with EOS; give it the time it needs.
                let _ = bus.timed_pop_filtered(
                    gst::ClockTime::from_seconds(30),
                    &[gst::MessageType::Eos, gst::MessageType::Error],
                );
                let _ = turn.pipeline.set_state(gst::State::Null);
            });
        }
    }
}

impl Drop for PocketsphinxRecognizer {
    fn drop(&mut self) {
        if let Some(turn) = self.current.as_ref() {
            let _ = turn.src.end_of_stream();
        }
        self.finish_previous();
    }
}
