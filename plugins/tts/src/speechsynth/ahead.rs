//! Synthesis ahead of playback: each queued utterance is synthesised by a worker thread as soon
//! as it is queued, so the next sentence is ready when the current one ends. A neural voice
//! takes a noticeable fraction of a sentence's length to synthesise; done in turn, that time
//! would open a silent gap between sentences of a live stream.

use crate::espeak::Utterance;
use crate::speaker::{Speaker, SynthError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};

/// One utterance: its text, and its audio once the worker has made it.
#[derive(Debug)]
pub struct Job {
    pub text: String,
    result: Mutex<Option<Result<Utterance, SynthError>>>,
    ready: Condvar,
    /// Set by `interrupt`: the worker skips it.
    cancelled: AtomicBool,
}

impl Job {
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
    }

    /// Whether the audio is made (waiting for it would not block).
    pub fn is_ready(&self) -> bool {
        self.result.lock().unwrap().is_some()
    }

    /// Waits at most `timeout` for the audio; returns whether it is ready.
    pub fn wait_ready(&self, timeout: std::time::Duration) -> bool {
        let result = self.result.lock().unwrap();
        let (result, _) = self
            .ready
            .wait_timeout_while(result, timeout, |r| r.is_none())
            .unwrap();
        result.is_some()
    }

    /// Waits for the audio (the worker takes jobs in order, so earlier ones are done first).
    pub fn wait(&self) -> Result<Utterance, SynthError> {
        let mut result = self.result.lock().unwrap();
        loop {
            if let Some(r) = result.take() {
                return r;
            }
            result = self.ready.wait(result).unwrap();
        }
    }

    fn finish(&self, r: Result<Utterance, SynthError>) {
        *self.result.lock().unwrap() = Some(r);
        self.ready.notify_all();
    }
}

/// An utterance to make, and who speaks it (or why nobody can).
type Request = (Arc<Job>, Result<Speaker, SynthError>);

/// The worker of one element; it ends with the element, after the utterance it is making.
#[derive(Default)]
pub struct Ahead {
    jobs: Mutex<Option<mpsc::Sender<Request>>>,
    worker: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Closing the channel ends the worker; waiting for it means no synthesis outlives the
        // element (nor runs on while the process exits).
        drop(self.jobs.lock().unwrap().take());
        if let Some(worker) = self.worker.lock().unwrap().take() {
            let _ = worker.join();
        }
    }
}

impl Ahead {
    /// Starts synthesising `text` with `speaker` (or reports why it cannot).
    pub fn submit(&self, text: String, speaker: Result<Speaker, SynthError>) -> Arc<Job> {
        let job = Arc::new(Job {
            text,
            result: Mutex::new(None),
            ready: Condvar::new(),
            cancelled: AtomicBool::new(false),
        });
        let mut jobs = self.jobs.lock().unwrap();
        let sender = jobs.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel::<Request>();
            let worker = std::thread::Builder::new()
                .name("speechsynth-ahead".into())
                .spawn(move || {
                    for (job, speaker) in rx {
                        let result = if job.cancelled.load(Ordering::SeqCst) {
                            Ok(Utterance::default())
                        } else {
                            speaker.and_then(|s| s.synthesize(&job.text))
                        };
                        job.finish(result);
                    }
                })
                .expect("cannot start the synthesis thread");
            *self.worker.lock().unwrap() = Some(worker);
            tx
        });
        if let Err(mpsc::SendError((job, speaker))) = sender.send((job.clone(), speaker)) {
            // The worker died (it never should): synthesise here, and start a new one next time.
            *jobs = None;
            job.finish(speaker.and_then(|s| s.synthesize(&job.text)));
        }
        job
    }
}
