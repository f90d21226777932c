//! The `openai` recogniser: each turn posted as a WAV to an OpenAI-compatible
//! `/v1/audio/transcriptions` endpoint, from one worker thread per element (turns are
//! recognised in order; a slow endpoint delays only this element's transcripts).

use super::imp::{Heard, Report};
use gst::ClockTime;
use std::sync::mpsc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct OpenaiSettings {
    /// Up to and including `/v1`, e.g. `http://127.0.0.1:8080/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<String>,
    pub language: String,
    pub timeout: Duration,
}

/// Audio kept after the end of speech in each posted turn.
const TAIL: ClockTime = ClockTime::from_mseconds(100);

struct Job {
    start: ClockTime,
    end: ClockTime,
    samples: Vec<i16>,
}

pub struct OpenaiRecognizer {
    jobs: mpsc::Sender<Job>,
    current: Option<(ClockTime, Vec<i16>)>,
}

impl OpenaiRecognizer {
    pub fn new(settings: OpenaiSettings, report: Report) -> Self {
        let (jobs, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("asr-openai".into())
            .spawn(move || {
                let client = reqwest::blocking::Client::builder()
                    .timeout(settings.timeout)
                    .build();
                for job in rx {
                    let heard = match &client {
                        Ok(client) => transcribe(client, &settings, &job.samples),
                        Err(e) => Err(format!("cannot make an HTTP client: {e}")),
                    };
                    report.deliver(heard.map(|text| Heard {
                        text,
                        is_final: true,
                        language: settings.language.clone(),
                        start: job.start,
                        end: job.end,
                    }));
                }
            })
            .expect("a thread for the recogniser");
        Self {
            jobs,
            current: None,
        }
    }

    pub fn begin(&mut self, start: ClockTime, samples: &[i16]) {
        self.current = Some((start, samples.to_vec()));
    }

    pub fn audio(&mut self, samples: &[i16]) {
        if let Some((_, all)) = self.current.as_mut() {
            all.extend_from_slice(samples);
        }
    }

    /// Returns whether a result will be reported.
    pub fn end(&mut self, end: ClockTime) -> bool {
        let Some((start, mut samples)) = self.current.take() else {
            return false;
        };
        // The turn was announced after its end-of-turn silence: post it up to where the
        // speech stopped, plus a little so the last sound is not clipped.
        let keep = (end + TAIL).saturating_sub(start).nseconds() * 16_000 / 1_000_000_000;
        samples.truncate(keep as usize);
        self.jobs
            .send(Job {
                start,
                end,
                samples,
            })
            .is_ok()
    }
}

/// A mono 16-bit 16 kHz WAV file of `samples`.
pub fn wav(samples: &[i16]) -> Vec<u8> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 16_000,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut out = std::io::Cursor::new(Vec::with_capacity(44 + samples.len() * 2));
    {
        let mut w = hound::WavWriter::new(&mut out, spec).expect("an in-memory WAV");
        for &s in samples {
            w.write_sample(s).expect("writing to memory");
        }
        w.finalize().expect("writing to memory");
    }
    out.into_inner()
}

#[derive(serde::Deserialize)]
struct Transcription {
    text: String,
}

fn transcribe(
    client: &reqwest::blocking::Client,
    settings: &OpenaiSettings,
    samples: &[i16],
) -> Result<String, String> {
    let url = format!(
        "{}/audio/transcriptions",
        settings.base_url.trim_end_matches('/')
    );
    let file = reqwest::blocking::multipart::Part::bytes(wav(samples))
        .file_name("utterance.wav")
        .mime_str("audio/wav")
        .map_err(|e| e.to_string())?;
    let mut form = reqwest::blocking::multipart::Form::new()
        .part("file", file)
        .text("model", settings.model.clone())
        .text("response_format", "json");
    if !settings.language.is_empty() {
        // The endpoint wants ISO 639-1 ("en"), not a region ("en-US").
        let language = settings.language.split(['-', '_']).next().unwrap_or("");
        form = form.text("language", language.to_owned());
    }
    let mut request = client.post(&url).multipart(form);
    if let Some(key) = &settings.api_key {
        request = request.bearer_auth(key);
    }
    let response = request.send().map_err(|e| {
        if e.is_timeout() {
            format!(
                "the transcription endpoint {url} did not answer within {:?}",
                settings.timeout
            )
        } else {
            format!("cannot reach the transcription endpoint {url}: {e}")
        }
    })?;
    let status = response.status();
    let body = response.text().map_err(|e| e.to_string())?;
    if !status.is_success() {
        let excerpt: String = body.chars().take(300).collect();
        return Err(format!(
            "the transcription endpoint {url} answered {status}: {excerpt}"
        ));
    }
    serde_json::from_str::<Transcription>(&body)
        .map(|t| t.text.trim().to_owned())
        .map_err(|e| format!("the transcription endpoint {url} answered no text ({e})"))
}
