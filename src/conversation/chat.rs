//! One session's conversation: the history, the reply being streamed, and speaking it.
//!
//! A question starts a reply task. Its text streams to the events socket as it arrives
//! (`reply_delta`), and every sentence goes to the [`Speaker`] the moment it is complete, with
//! the mood it expresses, so the avatar starts talking while the model is still writing. A new
//! question or an interrupt cancels the running reply (and so its HTTP request). Failures end
//! in an `error` event; what was already said stays said and remembered.

use super::assistant::Assistant;
use super::history::within_budget;
use super::llm::{Message, Role};
use super::mood::{classify, strip_tag};
use super::sentences::SentenceSplitter;
use super::{ConversationEvent, Speaker};
use std::sync::{Arc, Mutex};

/// How the model is asked to behave, after the persona.
const HOUSE_RULES: &str = "You are speaking aloud through an animated avatar: answer in short, \
plain spoken sentences, without lists, markdown or emoji. Answer in the language the user writes \
in. You may start a sentence with one mood tag: [happy], [confident], [thoughtful], [concerned] \
or [neutral].";

/// Why a question is not answered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ChatError {
    #[error("no language model is configured: set llm.base_url (and llm.model) in the configuration, or FACECAST_LLM_BASE_URL and FACECAST_LLM_MODEL; say keeps working without one")]
    NoModel,
    #[error("the question is longer than {0} characters; ask something shorter")]
    QuestionTooLong(usize),
}

pub struct Conversation {
    /// The name the conversation is remembered under: the session id unless the client named
    /// one, to continue it.
    pub id: String,
    /// This session's own persona (its request's, or its avatar's), instead of the default.
    pub persona: Option<String>,
    running: Mutex<Option<tokio::task::AbortHandle>>,
    /// A cancelled reply being written to Redis: the next question waits for it, so that it
    /// reads the conversation with that turn in it.
    saving: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// What the avatar has sounded of the current answer.
    sounded: Mutex<Sounded>,
    /// Set by a barge-in while the answer is still being written: what the user heard of it,
    /// remembered instead of everything the model wrote.
    heard: Mutex<Option<String>>,
}

/// The current answer's speech on the audio timeline: sentences that finished sounding, and
/// the one sounding now (text, start and length in ns of the session's running time).
#[derive(Default)]
struct Sounded {
    /// The sentences of the answer handed to the speaker (other speech, a plain `say`, is
    /// not part of the answer).
    said: Vec<String>,
    done: Vec<String>,
    current: Option<(String, u64, u64)>,
}

impl Conversation {
    pub fn new(id: String, persona: Option<String>) -> Self {
        Self {
            id,
            persona,
            running: Mutex::default(),
            saving: Mutex::default(),
            sounded: Mutex::default(),
            heard: Mutex::default(),
        }
    }

    /// An utterance started sounding at `start` (ns) for `length` (ns).
    pub fn sounding(&self, text: &str, start: u64, length: u64) {
        let mut s = self.sounded.lock().unwrap();
        if s.said.iter().any(|t| t == text) {
            s.current = Some((text.to_owned(), start, length));
        }
    }

    /// The utterance sounding finished (not cut short).
    pub fn sounded(&self, text: &str) {
        let mut s = self.sounded.lock().unwrap();
        if s.current.as_ref().is_some_and(|(t, _, _)| t == text) {
            s.current = None;
        }
        if s.said.iter().any(|t| t == text) {
            s.done.push(text.to_owned());
        }
    }

    /// What the user has heard of the current answer at `now` (ns of running time): the
    /// sentences that sounded, and the words of the one sounding, in proportion to its time.
    pub fn heard_until(&self, now: u64) -> String {
        let s = self.sounded.lock().unwrap();
        let mut heard = s.done.clone();
        if let Some((text, start, length)) = &s.current {
            let share = if *length == 0 {
                1.0
            } else {
                (now.saturating_sub(*start) as f64 / *length as f64).clamp(0.0, 1.0)
            };
            let words: Vec<&str> = text.split_whitespace().collect();
            let n = (words.len() as f64 * share).floor() as usize;
            if n > 0 {
                heard.push(format!("{}…", words[..n].join(" ")));
            }
        }
        heard.join(" ")
    }

    /// Whether any of the current answer has been handed to the speaker.
    pub fn answer_spoken(&self) -> bool {
        !self.sounded.lock().unwrap().said.is_empty()
    }

    /// A barge-in while the answer is being written: remember `heard` instead.
    pub fn heard_only(&self, heard: String) {
        *self.heard.lock().unwrap() = Some(heard);
    }

    /// Whether a reply is being written.
    pub fn is_running(&self) -> bool {
        self.running
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }

    /// Stops the reply being streamed, if any.
    pub fn cancel(&self) {
        if let Some(task) = self.running.lock().unwrap().take() {
            task.abort();
        }
    }
}

/// Says one finished sentence of `conversation`'s answer with its mood; returns whether
/// anything was said.
fn speak(speaker: &dyn Speaker, conversation: &Conversation, sentence: &str) -> bool {
    let (tagged, text) = strip_tag(sentence);
    let text = text.trim();
    if text.is_empty() {
        return false;
    }
    let mood = tagged.unwrap_or_else(|| classify(text));
    conversation
        .sounded
        .lock()
        .unwrap()
        .said
        .push(text.to_owned());
    speaker.say(text, Some((mood.emotion, mood.intensity as f64)));
    true
}

/// Reports a failure to the user and, when nothing was said yet, says the apology in the
/// session's language.
pub fn report(speaker: &dyn Speaker, assistant: &Assistant, message: String, said: bool) {
    speaker.emit(ConversationEvent::Error { message });
    if said {
        return;
    }
    if let Some(apology) = assistant.llm.config().apology_for(speaker.language()) {
        speaker.say(apology, None);
    }
}

/// Checks `question` and starts answering it in `conversation`, spoken by `speaker`.
/// A question over the limit is refused, and the user hears why.
pub fn start(
    assistant: Option<&Arc<Assistant>>,
    speaker: Arc<dyn Speaker>,
    conversation: &Arc<Conversation>,
    question: &str,
) -> Result<(), ChatError> {
    let assistant = assistant.ok_or(ChatError::NoModel)?;
    let max = assistant.llm.config().max_question_chars;
    if question.chars().count() > max {
        let e = ChatError::QuestionTooLong(max);
        // The user may be listening rather than reading: the avatar says so too.
        report(&*speaker, assistant, e.to_string(), false);
        return Err(e);
    }
    ask(
        speaker,
        conversation,
        assistant.clone(),
        question.to_owned(),
    );
    Ok(())
}

/// One question and the answer received so far; remembered when dropped.
struct Turn {
    speaker: Arc<dyn Speaker>,
    conversation: Arc<Conversation>,
    assistant: Arc<Assistant>,
    question: Message,
    reply: String,
}

impl Turn {
    /// Remembers the turn in this server's memory and returns the answer, if there was one.
    fn remember_locally(&mut self) -> Option<Message> {
        // After a barge-in, what the user heard is what is remembered.
        let reply = std::mem::take(&mut self.reply);
        let content = match self.conversation.heard.lock().unwrap().take() {
            Some(heard) => heard,
            None => reply,
        };
        if content.is_empty() {
            return None;
        }
        let answer = Message {
            role: Role::Assistant,
            content,
        };
        self.assistant
            .memory
            .append(&self.conversation.id, &self.question, &answer);
        Some(answer)
    }

    /// Remembers the turn, in Redis too when it is configured.
    async fn save(mut self) {
        let Some(answer) = self.remember_locally() else {
            return;
        };
        save_shared(
            &*self.speaker,
            &self.conversation,
            &self.assistant,
            &self.question,
            &answer,
        )
        .await;
    }
}

async fn save_shared(
    speaker: &dyn Speaker,
    conversation: &Conversation,
    assistant: &Assistant,
    question: &Message,
    answer: &Message,
) {
    let Some(memory) = &assistant.shared_memory else {
        return;
    };
    if let Err(e) = memory.append(&conversation.id, question, answer).await {
        speaker.emit(ConversationEvent::Error {
            message: format!("{e}; this answer is remembered by this server only"),
        });
    }
}

/// A reply cancelled mid-stream still counts: what arrived of it is remembered.
impl Drop for Turn {
    fn drop(&mut self) {
        let Some(answer) = self.remember_locally() else {
            return;
        };
        if self.assistant.shared_memory.is_none() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (speaker, assistant) = (self.speaker.clone(), self.assistant.clone());
        let conversation = self.conversation.clone();
        let question = self.question.clone();
        let saving = runtime.spawn(async move {
            save_shared(&*speaker, &conversation, &assistant, &question, &answer).await;
        });
        *self.conversation.saving.lock().unwrap() = Some(saving);
    }
}

/// Starts answering `question` (cancelling a reply still running).
pub fn ask(
    speaker: Arc<dyn Speaker>,
    conversation: &Arc<Conversation>,
    assistant: Arc<Assistant>,
    question: String,
) {
    conversation.cancel();
    *conversation.sounded.lock().unwrap() = Sounded::default();
    *conversation.heard.lock().unwrap() = None;
    let task_conversation = conversation.clone();
    let handle = tokio::spawn(async move {
        let conversation = task_conversation;
        let config = assistant.llm.config();
        let saving = conversation.saving.lock().unwrap().take();
        if let Some(saving) = saving {
            let _ = saving.await;
        }
        let history = match &assistant.shared_memory {
            None => assistant.memory.load(&conversation.id),
            Some(shared) => match shared.load(&conversation.id).await {
                Ok(turns) => turns,
                Err(e) => {
                    // Answer anyway, from what this server remembers itself.
                    speaker.emit(ConversationEvent::Error {
                        message: format!("{e}; answering from this server's own memory"),
                    });
                    assistant.memory.load(&conversation.id)
                }
            },
        };
        let mut messages = vec![Message {
            role: Role::System,
            content: match conversation.persona.as_ref().or(assistant.persona.as_ref()) {
                Some(p) => format!("{p}\n\n{HOUSE_RULES}"),
                None => HOUSE_RULES.to_owned(),
            },
        }];
        messages.extend(within_budget(
            &history,
            config.history_turns,
            config.history_tokens,
        ));
        let question = Message {
            role: Role::User,
            content: question,
        };
        messages.push(question.clone());
        // Remembered however the reply ends: finished, failed, or cancelled by an interrupt.
        let mut turn = Turn {
            speaker: speaker.clone(),
            conversation: conversation.clone(),
            assistant: assistant.clone(),
            question,
            reply: String::new(),
        };
        // The first clause is spoken as soon as it is complete: the avatar answers sooner.
        let mut splitter = SentenceSplitter::default().early_first_clause();
        let mut said = false;
        let result = assistant
            .llm
            .stream(&messages, |delta| {
                turn.reply.push_str(delta);
                speaker.emit(ConversationEvent::ReplyDelta {
                    text: delta.to_owned(),
                });
                for sentence in splitter.push(delta) {
                    said |= speak(&*speaker, &conversation, &sentence);
                }
            })
            .await;
        match result {
            Ok(()) => {
                if let Some(rest) = splitter.finish() {
                    speak(&*speaker, &conversation, &rest);
                }
                let text = turn.reply.clone();
                turn.save().await;
                speaker.emit(ConversationEvent::ReplyDone { text });
            }
            // Whole sentences already spoken stay; the unfinished tail is dropped.
            Err(e) => {
                report(&*speaker, &assistant, e.to_string(), said);
                turn.save().await;
            }
        }
    });
    *conversation.running.lock().unwrap() = Some(handle.abort_handle());
}

#[cfg(test)]
mod tests {
    //! Against a scripted OpenAI-compatible server on loopback: real HTTP, real SSE framing,
    //! chunks cut mid-word and mid-character, pauses, errors.

    use crate::config::Config;
    use crate::conversation::scripted::{scripted, scripted_conversation, sse};
    use crate::metrics::Metrics;
    use crate::session::{CreateSession, Registry, SessionEvent};
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::Duration;

    fn registry(base_url: Option<String>) -> Arc<Registry> {
        remembering(base_url, None)
    }

    /// A registry (a server instance) whose conversations are kept in Redis at `redis_url`.
    fn remembering(base_url: Option<String>, redis_url: Option<String>) -> Arc<Registry> {
        registry_with(|c| {
            c.llm.base_url = base_url;
            c.llm.redis_url = redis_url;
        })
    }

    fn registry_with(configure: impl FnOnce(&mut Config)) -> Arc<Registry> {
        gst::init().unwrap();
        crate::plugins::register().ok();
        let mut config = Config::default();
        config.llm.idle_timeout_secs = 5;
        configure(&mut config);
        Registry::new(Arc::new(config), Arc::new(Metrics::new()))
    }

    /// A whole answer, streamed in one piece.
    fn answer(text: &str) -> (&'static str, Vec<(u64, Vec<u8>)>) {
        let mut body = sse(&[text]);
        body.extend_from_slice(b"data: [DONE]\n\n");
        ("200 OK", vec![(0, body)])
    }

    fn is_done(e: &SessionEvent) -> bool {
        matches!(e, SessionEvent::ReplyDone { .. })
    }

    /// The (role, content) pairs of a request's messages after the system prompt.
    fn turns(request: &serde_json::Value) -> Vec<(String, String)> {
        request["messages"].as_array().unwrap()[1..]
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conversations_outlive_the_server_in_redis() {
        let redis = facecast_testkit::RedisServer::start();
        let mut llm = scripted_conversation(vec![
            answer("Nice to meet you, Ada."),
            answer("Your name is Ada."),
            answer("Still here."),
        ])
        .await;
        let named = || CreateSession {
            conversation: Some("ada-1".into()),
            ..Default::default()
        };
        let first = remembering(Some(llm.base_url.clone()), Some(redis.url()));
        let s = first.create(named()).await.unwrap();
        assert_eq!(s.info().conversation, "ada-1");
        let mut events = s.subscribe();
        first.chat(&s.id, "My name is Ada.").unwrap();
        next(&mut events, is_done).await;
        first.end(&s.id, "test over");
        drop(first);

        // Another server instance (or this one, restarted) continues the conversation.
        let second = remembering(Some(llm.base_url.clone()), Some(redis.url()));
        let s2 = second.create(named()).await.unwrap();
        let mut events = s2.subscribe();
        second.chat(&s2.id, "What is my name?").unwrap();
        next(&mut events, is_done).await;
        llm.requests.recv().await.unwrap();
        let asked = llm.requests.recv().await.unwrap();
        assert_eq!(
            turns(&asked),
            pairs(&[
                ("user", "My name is Ada."),
                ("assistant", "Nice to meet you, Ada."),
                ("user", "What is my name?"),
            ])
        );

        // Redis goes away: the session answers from its own memory and says what happened.
        drop(redis);
        second.chat(&s2.id, "Are you there?").unwrap();
        let seen = collect(&mut events, |seen| {
            let errors = seen
                .iter()
                .filter(|e| matches!(e, SessionEvent::Error { message } if message.contains("conversation memory")))
                .count();
            // Speech trails the text: earlier answers may still be starting.
            errors == 2 && spoken(seen).contains(&"Still here.")
        })
        .await;
        assert!(seen.iter().any(is_done));
        let asked = llm.requests.recv().await.unwrap();
        assert_eq!(
            turns(&asked),
            pairs(&[
                ("user", "What is my name?"),
                ("assistant", "Your name is Ada."),
                ("user", "Are you there?"),
            ])
        );
        second.end(&s2.id, "test over");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn without_redis_the_server_remembers_conversations_in_memory() {
        let mut llm = scripted_conversation(vec![
            answer("Hello Ada."),
            answer("You are Ada."),
            answer("I do not know yet."),
            answer("Still Ada."),
        ])
        .await;
        let registry = registry(Some(llm.base_url.clone()));
        let s = registry.create(CreateSession::default()).await.unwrap();
        let mut events = s.subscribe();
        registry.chat(&s.id, "I am Ada.").unwrap();
        next(&mut events, is_done).await;
        registry.chat(&s.id, "Who am I?").unwrap();
        next(&mut events, is_done).await;
        llm.requests.recv().await.unwrap();
        let asked = llm.requests.recv().await.unwrap();
        assert_eq!(
            turns(&asked),
            pairs(&[
                ("user", "I am Ada."),
                ("assistant", "Hello Ada."),
                ("user", "Who am I?"),
            ])
        );
        // A new conversation starts afresh; naming this one continues it (a page reload).
        let fresh = registry.create(CreateSession::default()).await.unwrap();
        let mut fresh_events = fresh.subscribe();
        registry.chat(&fresh.id, "Who am I?").unwrap();
        next(&mut fresh_events, is_done).await;
        let asked = llm.requests.recv().await.unwrap();
        assert_eq!(turns(&asked), pairs(&[("user", "Who am I?")]));
        let again = registry
            .create(CreateSession {
                conversation: Some(s.id.clone()),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut again_events = again.subscribe();
        registry.chat(&again.id, "And now?").unwrap();
        next(&mut again_events, is_done).await;
        let asked = llm.requests.recv().await.unwrap();
        assert_eq!(turns(&asked).len(), 5, "{:?}", turns(&asked));

        // A question over the limit: refused with 413, and the user hears why.
        let long = "why ".repeat(400);
        let err = crate::error::ApiError::from(registry.chat(&s.id, &long).unwrap_err());
        assert_eq!((err.status.as_u16(), err.code), (413, "question_too_long"));
        let apology = "Sorry, I cannot answer that right now.";
        let seen = collect(&mut events, |seen| spoken(seen).contains(&apology)).await;
        assert!(seen.iter().any(
            |e| matches!(e, SessionEvent::Error { message } if message.contains("longer than 1000"))
        ));
        for id in [&s.id, &fresh.id, &again.id] {
            registry.end(id, "test over");
        }
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

    /// After a barge-in the conversation remembers what the user heard of the answer, from
    /// the audio timeline: not the sentences queued behind it, nor the end of the one cut.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn after_a_barge_in_only_what_was_heard_is_remembered() {
        let full = "Hello there. This second sentence is long enough to be cut somewhere in its middle by the user. This third one is never heard.";
        // The model has finished writing when the user speaks (the usual case), and, second,
        // it is still writing.
        for slow in [false, true] {
            let parts = if slow {
                let mut p = vec![(0, sse(&["Hello there. This second sentence is long enough to be cut somewhere in its middle by the user."]))];
                p.push((4000, sse(&[" This third one is never heard."])));
                p.push((0, b"data: [DONE]\n\n".to_vec()));
                p
            } else {
                answer(full).1
            };
            let server = scripted("200 OK", parts).await;
            let registry = registry(Some(server.base_url.clone()));
            let session = registry.create(CreateSession::default()).await.unwrap();
            let mut events = session.subscribe();
            registry.chat(&session.id, "Hello?").unwrap();
            next(&mut events, |e| {
                started(e).is_some_and(|t| t.starts_with("This second sentence"))
            })
            .await;
            let now = session.running_time().unwrap();
            registry.heard_speech(
                &session,
                facecast_common::UserSpeechEvent::Started {
                    start: now,
                    from: now,
                },
            );
            next(&mut events, |e| {
                matches!(
                    e,
                    SessionEvent::SpeechEnded {
                        interrupted: true,
                        ..
                    }
                )
            })
            .await;
            // The cancelled turn (slow) is remembered as it is dropped.
            let assistant = registry.assistant.clone().unwrap();
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            let remembered = loop {
                let turns = assistant.memory.load(&session.conversation.id);
                if let Some(last) = turns.last() {
                    break last.content.clone();
                }
                assert!(std::time::Instant::now() < deadline, "nothing remembered");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(
                remembered.starts_with("Hello there.") && !remembered.contains("third"),
                "slow={slow}: remembered {remembered:?}"
            );
            assert!(
                remembered.len() < full.len() - 40,
                "slow={slow}: {remembered:?}"
            );
            registry.end(&session.id, "test over");
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
        let session = registry.create(CreateSession::default()).await.unwrap();
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
            .await
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
    async fn personas_come_from_the_session_the_avatar_or_the_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let (default_file, avatar_file) = (dir.path().join("anna.txt"), dir.path().join("bob.txt"));
        std::fs::write(&default_file, "You are Anna, a financial advisor.\n").unwrap();
        std::fs::write(&avatar_file, "You are Bob, the built-in face.").unwrap();
        let mut llm =
            scripted_conversation(vec![answer("Arr."), answer("Hi."), answer("Hello.")]).await;
        let system =
            |r: &serde_json::Value| r["messages"][0]["content"].as_str().unwrap().to_owned();
        let with_avatar = registry_with(|c| {
            c.llm.base_url = Some(llm.base_url.clone());
            c.llm.persona = Some(default_file.clone());
            c.llm
                .avatar_personas
                .insert("default".into(), avatar_file.clone());
        });
        let without_avatar = registry_with(|c| {
            c.llm.base_url = Some(llm.base_url.clone());
            c.llm.persona = Some(default_file.clone());
        });
        let cases = [
            (&with_avatar, Some("You are a pirate."), "You are a pirate."),
            (&with_avatar, None, "You are Bob, the built-in face."),
            (&without_avatar, None, "You are Anna, a financial advisor."),
        ];
        for (registry, persona, expected) in cases {
            let s = registry
                .create(CreateSession {
                    persona: persona.map(str::to_owned),
                    ..Default::default()
                })
                .await
                .unwrap();
            let mut events = s.subscribe();
            registry.chat(&s.id, "Who are you?").unwrap();
            next(&mut events, is_done).await;
            let asked = llm.requests.recv().await.unwrap();
            assert!(system(&asked).starts_with(expected), "{}", system(&asked));
            assert!(
                system(&asked).contains("[happy]"),
                "the house rules follow the persona"
            );
            registry.end(&s.id, "test over");
        }
        let err = crate::error::ApiError::from(
            with_avatar
                .create(CreateSession {
                    persona: Some("x".repeat(5000)),
                    ..Default::default()
                })
                .await
                .err()
                .unwrap(),
        );
        assert_eq!((err.status.as_u16(), err.code), (413, "persona_too_long"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreachable_slow_or_garbled_model_is_reported() {
        let error = |e: &SessionEvent| matches!(e, SessionEvent::Error { .. });
        let message = |e: SessionEvent| match e {
            SessionEvent::Error { message } => message,
            other => panic!("not an error: {other:?}"),
        };
        // Down: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let down = registry(Some(format!("http://127.0.0.1:{port}/v1")));
        let s = down.create(CreateSession::default()).await.unwrap();
        let mut events = s.subscribe();
        down.chat(&s.id, "Hello?").unwrap();
        let m = message(next(&mut events, error).await);
        assert!(m.contains("cannot reach the language model"), "{m}");
        let ev = next(&mut events, |e| started(e).is_some()).await;
        assert_eq!(started(&ev), Some("Sorry, I cannot answer that right now."));
        down.end(&s.id, "test over");

        // Slow: nothing more for longer than the idle timeout.
        let server = scripted(
            "200 OK",
            vec![(0, sse(&["Well, "])), (2500, sse(&["late."]))],
        )
        .await;
        let slow = registry_with(|c| {
            c.llm.base_url = Some(server.base_url.clone());
            c.llm.idle_timeout_secs = 1;
        });
        fails_after_saying(&slow, "Well,", "sent nothing for 1 s").await;

        // Garbled: a chunk that is not JSON. What came before it is still said.
        let server = scripted(
            "200 OK",
            vec![
                (0, sse(&["Fine. Then"])),
                (0, b"data: {not json\n\n".to_vec()),
            ],
        )
        .await;
        let garbled = registry(Some(server.base_url.clone()));
        fails_after_saying(&garbled, "Fine.", "broke off").await;
    }

    /// Asks once in a new session of `registry`: `said` is spoken, then an error event whose
    /// message contains `reason` arrives.
    async fn fails_after_saying(registry: &Arc<Registry>, said: &str, reason: &str) {
        let error = |e: &SessionEvent| matches!(e, SessionEvent::Error { .. });
        let s = registry.create(CreateSession::default()).await.unwrap();
        let mut events = s.subscribe();
        registry.chat(&s.id, "Hello?").unwrap();
        let seen = collect(&mut events, |seen| {
            seen.iter().any(error) && spoken(seen).contains(&said)
        })
        .await;
        let Some(SessionEvent::Error { message }) = seen.into_iter().find(error) else {
            unreachable!()
        };
        assert!(message.contains(reason), "{message}");
        registry.end(&s.id, "test over");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failures_are_reported_and_interrupt_cancels_the_request() {
        // No model configured: 409, say still works.
        let plain = registry(None);
        let s = plain.create(CreateSession::default()).await.unwrap();
        let err = crate::error::ApiError::from(plain.chat(&s.id, "hi").unwrap_err());
        assert_eq!((err.status.as_u16(), err.code), (409, "no_llm"));
        plain.end(&s.id, "test over");

        // The endpoint answers 500: an error event, and the apology is spoken.
        let server = scripted(
            "500 Internal Server Error",
            vec![(0, br#"{"error": {"message": "model overloaded"}}"#.to_vec())],
        )
        .await;
        let registry = registry(Some(server.base_url.clone()));
        let session = registry.create(CreateSession::default()).await.unwrap();
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
        let session2 = registry2.create(CreateSession::default()).await.unwrap();
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
        let session3 = registry3.create(CreateSession::default()).await.unwrap();
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
