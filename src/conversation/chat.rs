//! One session's conversation: the history, the reply being streamed, and speaking it.
//!
//! A question starts a reply task. Its text streams to the events socket as it arrives
//! (`reply_delta`), and every sentence goes to `speechsynth` the moment it is complete, with
//! the mood it expresses, so the avatar starts talking while the model is still writing. A new
//! question or an interrupt cancels the running reply (and so its HTTP request). Failures end
//! in an `error` event; what was already said stays said and in the history.

use super::llm::{LlmClient, Message};
use super::mood::{classify, strip_tag};
use super::sentences::SentenceSplitter;
use crate::session::{Session, SessionEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// How the model is asked to behave, after the persona.
const HOUSE_RULES: &str = "You are speaking aloud through an animated avatar: answer in short, \
plain spoken sentences, without lists, markdown or emoji. Answer in the language the user writes \
in. You may start a sentence with one mood tag: [happy], [confident], [thoughtful], [concerned] \
or [neutral].";

#[derive(Default)]
pub struct Conversation {
    history: Mutex<VecDeque<Message>>,
    running: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Conversation {
    /// Stops the reply being streamed, if any.
    pub fn cancel(&self) {
        if let Some(task) = self.running.lock().unwrap().take() {
            task.abort();
        }
    }

    fn remember(&self, question: String, answer: String, turns: usize) {
        let mut history = self.history.lock().unwrap();
        history.push_back(Message {
            role: "user",
            content: question,
        });
        history.push_back(Message {
            role: "assistant",
            content: answer,
        });
        while history.len() > turns * 2 {
            history.pop_front();
        }
    }
}

/// Says one finished sentence with its mood; returns whether anything was said.
fn speak(session: &Session, sentence: &str) -> bool {
    let (tagged, text) = strip_tag(sentence);
    let text = text.trim();
    if text.is_empty() {
        return false;
    }
    let mood = tagged.unwrap_or_else(|| classify(text));
    session.say(text, Some((mood.emotion, mood.intensity as f64)));
    true
}

/// Starts answering `question` in `session` (cancelling a reply still running).
pub fn ask(session: &Arc<Session>, llm: Arc<LlmClient>, persona: Option<String>, question: String) {
    let conversation = &session.conversation;
    conversation.cancel();
    let mut messages = vec![Message {
        role: "system",
        content: match persona {
            Some(p) => format!("{p}\n\n{HOUSE_RULES}"),
            None => HOUSE_RULES.to_owned(),
        },
    }];
    messages.extend(conversation.history.lock().unwrap().iter().cloned());
    messages.push(Message {
        role: "user",
        content: question.clone(),
    });
    let task_session = session.clone();
    let handle = tokio::spawn(async move {
        let session = task_session;
        let mut splitter = SentenceSplitter::default();
        let mut reply = String::new();
        let mut said = false;
        let result = llm
            .stream(&messages, |delta| {
                reply.push_str(delta);
                session.emit(SessionEvent::ReplyDelta {
                    text: delta.to_owned(),
                });
                for sentence in splitter.push(delta) {
                    said |= speak(&session, &sentence);
                }
            })
            .await;
        match result {
            Ok(()) => {
                if let Some(rest) = splitter.finish() {
                    speak(&session, &rest);
                }
                session.emit(SessionEvent::ReplyDone {
                    text: reply.clone(),
                });
            }
            Err(e) => {
                // Whole sentences already spoken stay; the unfinished tail is dropped.
                session.emit(SessionEvent::Error {
                    message: e.to_string(),
                });
                let apology = &llm.config().apology;
                if !said && !apology.is_empty() {
                    session.say(apology, None);
                }
            }
        }
        if !reply.is_empty() {
            session
                .conversation
                .remember(question, reply, llm.config().history_turns);
        }
    });
    *conversation.running.lock().unwrap() = Some(handle.abort_handle());
}

#[cfg(test)]
mod tests {
    //! Against a scripted OpenAI-compatible server on loopback: real HTTP, real SSE framing,
    //! chunks cut mid-word and mid-character, pauses, errors.

    use crate::config::Config;
    use crate::conversation::scripted::{scripted, sse};
    use crate::metrics::Metrics;
    use crate::session::{CreateSession, Registry, SessionEvent};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    fn registry(base_url: Option<String>) -> Arc<Registry> {
        gst::init().unwrap();
        crate::plugins::register().ok();
        let mut config = Config::default();
        config.llm.base_url = base_url;
        config.llm.idle_timeout_secs = 5;
        Registry::new(Arc::new(config), Arc::new(Metrics::new()))
    }

    async fn next(
        rx: &mut tokio::sync::broadcast::Receiver<SessionEvent>,
        want: impl Fn(&SessionEvent) -> bool,
    ) -> SessionEvent {
        tokio::time::timeout(Duration::from_secs(15), async {
            loop {
                let ev = rx.recv().await.expect("events open");
                if want(&ev) {
                    return ev;
                }
            }
        })
        .await
        .expect("event in time")
    }

    /// Events until `done` holds for all of them so far (they may interleave in any order).
    async fn collect(
        rx: &mut tokio::sync::broadcast::Receiver<SessionEvent>,
        done: impl Fn(&[SessionEvent]) -> bool,
    ) -> Vec<SessionEvent> {
        let mut seen = Vec::new();
        tokio::time::timeout(Duration::from_secs(15), async {
            while !done(&seen) {
                seen.push(rx.recv().await.expect("events open"));
            }
        })
        .await
        .unwrap_or_else(|_| panic!("events in time; got {seen:?}"));
        seen
    }

    fn spoken(events: &[SessionEvent]) -> Vec<&str> {
        events.iter().filter_map(started).collect()
    }

    fn started(ev: &SessionEvent) -> Option<&str> {
        match ev {
            SessionEvent::SpeechStarted { text } => Some(text),
            _ => None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_streamed_reply_is_spoken_sentence_by_sentence() {
        let first = sse(&["[happy] Hel", "lo there! How", " are you", "?"]);
        let second = sse(&[" Let me think", " about your savings plan, سل", "ام."]);
        let mut parts: Vec<(u64, Vec<u8>)> = first.chunks(7).map(|c| (5, c.to_vec())).collect();
        // A long pause before the rest, cut into 5-byte pieces (mid-character in the Persian).
        parts.push((1500, Vec::new()));
        parts.extend(second.chunks(5).map(|c| (2, c.to_vec())));
        parts.push((0, b"data: [DONE]\n\n".to_vec()));
        let server = scripted("200 OK", parts).await;
        let registry = registry(Some(server.base_url.clone()));
        let session = registry.create(CreateSession::default()).unwrap();
        let mut events = session.subscribe();
        registry.chat(&session.id, "Hello?").unwrap();

        let ev = next(&mut events, |e| started(e).is_some()).await;
        assert_eq!(started(&ev), Some("Hello there!"));
        assert!(
            !server.finished.load(Ordering::SeqCst),
            "the first sentence was spoken only after the stream ended"
        );
        let request = server.request.await.unwrap();
        assert_eq!(request["stream"], true);
        assert_eq!(request["messages"][0]["role"], "system");
        assert_eq!(request["messages"][1]["content"], "Hello?");

        let rest = collect(&mut events, |seen| {
            spoken(seen).len() == 2
                && seen
                    .iter()
                    .any(|e| matches!(e, SessionEvent::ReplyDone { .. }))
        })
        .await;
        assert_eq!(
            spoken(&rest),
            ["How are you?", "Let me think about your savings plan, سلام."]
        );
        assert!(rest.contains(&SessionEvent::ReplyDone {
            text: "[happy] Hello there! How are you? Let me think about your savings plan, سلام."
                .into()
        }));
        registry.end(&session.id, "test over");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_persian_session_hears_a_persian_answer() {
        let answer = sse(&[
            "[happy] سلام! حال ",
            "شما خوب است؟ ",
            "من مشاور مالی شما هستم.",
        ]);
        // Cut into 3-byte pieces: most Persian letters are 2 bytes, so many cuts fall inside one.
        let parts = answer.chunks(3).map(|c| (1, c.to_vec())).collect();
        let server = scripted("200 OK", parts).await;
        let registry = registry(Some(server.base_url.clone()));
        let session = registry
            .create(CreateSession {
                lang: Some("fa".into()),
                ..Default::default()
            })
            .unwrap();
        let mut events = session.subscribe();
        registry.chat(&session.id, "سلام، وقت بخیر").unwrap();
        let seen = collect(&mut events, |seen| spoken(seen).len() == 3).await;
        assert_eq!(
            spoken(&seen),
            ["سلام!", "حال شما خوب است؟", "من مشاور مالی شما هستم."]
        );
        let request = server.request.await.unwrap();
        assert_eq!(request["messages"][1]["content"], "سلام، وقت بخیر");
        registry.end(&session.id, "test over");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_reported_and_interrupt_cancels_the_request() {
        // No model configured: 409, say still works.
        let plain = registry(None);
        let s = plain.create(CreateSession::default()).unwrap();
        let err = plain.chat(&s.id, "hi").unwrap_err();
        assert_eq!((err.status.as_u16(), err.code), (409, "no_llm"));
        plain.end(&s.id, "test over");

        // The endpoint answers 500: an error event, and the apology is spoken.
        let server = scripted(
            "500 Internal Server Error",
            vec![(0, br#"{"error": {"message": "model overloaded"}}"#.to_vec())],
        )
        .await;
        let registry = registry(Some(server.base_url.clone()));
        let session = registry.create(CreateSession::default()).unwrap();
        let mut events = session.subscribe();
        registry.chat(&session.id, "Hello?").unwrap();
        let ev = next(&mut events, |e| matches!(e, SessionEvent::Error { .. })).await;
        let SessionEvent::Error { message } = ev else {
            unreachable!()
        };
        assert!(
            message.contains("500") && message.contains("model overloaded"),
            "{message}"
        );
        let ev = next(&mut events, |e| started(e).is_some()).await;
        assert_eq!(started(&ev), Some("Sorry, I cannot answer that right now."));

        // An error in the middle of the stream: what was said stays, no apology.
        let mut parts = vec![(0, sse(&["Fine. Then"]))];
        parts.push((
            0,
            b"data: {\"error\": {\"message\": \"backend crashed\"}}\n\n".to_vec(),
        ));
        let server = scripted("200 OK", parts).await;
        let registry2 = self::registry(Some(server.base_url.clone()));
        let session2 = registry2.create(CreateSession::default()).unwrap();
        let mut events2 = session2.subscribe();
        registry2.chat(&session2.id, "Go on").unwrap();
        let seen = collect(&mut events2, |seen| {
            !spoken(seen).is_empty() && seen.iter().any(|e| matches!(e, SessionEvent::Error { .. }))
        })
        .await;
        assert_eq!(
            spoken(&seen),
            ["Fine."],
            "the apology is not said after real speech"
        );
        assert!(seen.iter().any(
            |e| matches!(e, SessionEvent::Error { message } if message.contains("backend crashed"))
        ));

        // Interrupt while the model is still writing: the request is dropped.
        let slow: Vec<(u64, Vec<u8>)> = (0..50)
            .map(|i| (200, sse(&[&format!("word{i} ")])))
            .collect();
        let server = scripted("200 OK", slow).await;
        let registry3 = self::registry(Some(server.base_url.clone()));
        let session3 = registry3.create(CreateSession::default()).unwrap();
        let mut events3 = session3.subscribe();
        registry3.chat(&session3.id, "Talk forever").unwrap();
        next(&mut events3, |e| {
            matches!(e, SessionEvent::ReplyDelta { .. })
        })
        .await;
        session3.interrupt();
        let deadline = std::time::Instant::now() + Duration::from_secs(3);
        while !server.client_gone.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            server.client_gone.load(Ordering::SeqCst),
            "the request survived the interrupt"
        );
        for (r, s) in [
            (&registry, &session),
            (&registry2, &session2),
            (&registry3, &session3),
        ] {
            r.end(&s.id, "test over");
        }
    }
}
