//! What a session does with what a person says to it (a WHIP publisher in `converse` mode):
//! the turn-taking side of the registry.
//!
//! - A possible start of speech while the avatar answers holds its voice at once (on the
//!   posting thread, see `Registry::watch_bus`); a dismissed one lets it go.
//! - Confirmed speech while the avatar answers is a barge-in: the answer is interrupted and the
//!   conversation keeps only what was heard of it, from the audio timeline.
//! - A final transcript becomes the next question.

use super::{Registry, Session, SessionEvent};
use crate::conversation::chat::ChatError;
use facecast_common::{TranscriptEvent, UserSpeechEvent};
use std::sync::atomic::Ordering;
use std::sync::Arc;

impl Registry {
    /// The person publishing to `session` started or stopped speaking. Speech that starts while
    /// the avatar answers interrupts it (barge-in): audio, lips, the reply being written and
    /// the sentences queued all stop.
    pub(crate) fn heard_speech(&self, session: &Arc<Session>, speech: UserSpeechEvent) {
        match speech {
            UserSpeechEvent::Started { start, .. } => {
                session.emit(SessionEvent::UserSpeechStarted);
                if let Some(now) = session.running_time() {
                    self.metrics
                        .vad_seconds
                        .observe(now.saturating_sub(start).nseconds() as f64 / 1e9);
                }
                let held = session.held_since();
                if session.is_answering() || held.is_some() {
                    // Silent since the hold (if any): that is where the answer was cut.
                    let cut = held.or_else(|| session.running_time()).unwrap_or_default();
                    self.remember_what_was_heard(session, cut);
                    session.interrupt();
                    if !session.speaking.load(Ordering::SeqCst) {
                        // Only an answer being written: no speech to wait for.
                        session.release_voice();
                    }
                    let after = cut.saturating_sub(start);
                    self.metrics.barge_ins.inc();
                    self.metrics
                        .barge_in_seconds
                        .observe(after.nseconds() as f64 / 1e9);
                    tracing::info!(
                        session = %session.id,
                        "barge-in, {} ms after the speech began",
                        after.mseconds()
                    );
                    session.emit(SessionEvent::BargeIn {
                        after_ms: after.mseconds(),
                    });
                }
            }
            UserSpeechEvent::Ended { start, end } => {
                session.emit(SessionEvent::UserSpeechEnded {
                    duration_ms: end.saturating_sub(start).mseconds(),
                });
            }
            // Handled as they are posted (see `watch_bus`).
            UserSpeechEvent::Possible { .. } | UserSpeechEvent::Dismissed { .. } => {}
        }
    }

    /// A barge-in: the conversation remembers only the words of the answer that sounded
    /// before it, from the audio timeline (not what the model wrote, or what was queued).
    fn remember_what_was_heard(&self, session: &Arc<Session>, cut: gst::ClockTime) {
        let conversation = &session.conversation;
        if !conversation.answer_spoken() {
            return;
        }
        let heard = conversation.heard_until(cut.nseconds());
        if conversation.is_running() {
            // The turn being written is remembered when it is cancelled, as heard.
            conversation.heard_only(heard);
            return;
        }
        let Some(assistant) = self.assistant.clone() else {
            return;
        };
        assistant
            .memory
            .correct_last_answer(&conversation.id, &heard);
        if assistant.shared_memory.is_some() {
            let (id, weak) = (conversation.id.clone(), Arc::downgrade(session));
            tokio::spawn(async move {
                let Some(shared) = &assistant.shared_memory else {
                    return;
                };
                if let Err(e) = shared.correct_last_answer(&id, &heard).await {
                    if let Some(session) = weak.upgrade() {
                        session.emit(SessionEvent::Error {
                            message: format!(
                                "{e}; the interrupted answer is remembered in full there"
                            ),
                        });
                    }
                }
            });
        }
    }

    /// What the person said: shown as it forms; a final transcript is the next question.
    pub(super) fn heard_words(&self, session: &Arc<Session>, words: TranscriptEvent) {
        session.emit(SessionEvent::Transcript {
            text: words.text.clone(),
            is_final: words.is_final,
            language: words.language.clone(),
        });
        if !words.is_final || words.text.trim().is_empty() {
            return;
        }
        if let Some(latency) = session
            .running_time()
            .map(|now| now.saturating_sub(words.end))
        {
            self.metrics
                .asr_seconds
                .observe(latency.nseconds() as f64 / 1e9);
        }
        if let Err(e) = self.chat(&session.id, words.text.trim()) {
            let code = match e {
                ChatError::NoModel => "chat_unavailable",
                ChatError::QuestionTooLong(_) => "question_too_long",
            };
            tracing::info!(session = %session.id, "transcript not asked ({code}): {e}");
            session.emit(SessionEvent::Error {
                message: format!("{code}: {e}"),
            });
        }
    }
}
