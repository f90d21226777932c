//! Conversation memory: the turns sent back to the model with each new question.
//!
//! A conversation has a name: the session id, or one the client gives when it creates a session
//! (the web client keeps one per browser tab, so a reload continues the conversation).
//! The server process remembers the most recently used conversations ([`MemoryHistory`]). With
//! `llm.redis_url` set, Redis is the memory of record ([`RedisHistory`]): each conversation is a
//! list under `facecast:conversation:{name}`, read before every question and appended after
//! every answer, so a conversation outlives the server process and several servers behind one
//! balancer share it. While Redis cannot be reached the process's own memory answers, and the
//! caller tells the user.
//!
//! What is sent is bounded twice: at most `history_turns` turns, and at most `history_tokens`
//! estimated tokens (about four characters of English or two of Persian each), dropping the
//! oldest turns first.

use super::llm::{Message, Role};
use redis::AsyncCommands;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// The Redis list one conversation is kept in.
fn key(conversation: &str) -> String {
    format!("facecast:conversation:{conversation}")
}

/// A rough token count, good enough for a budget: ASCII text runs about four characters a token
/// in common tokenizers, other scripts about two.
pub fn estimate_tokens(text: &str) -> usize {
    let (ascii, other) = text.chars().fold((0usize, 0usize), |(a, o), c| {
        if c.is_ascii() {
            (a + 1, o)
        } else {
            (a, o + 1)
        }
    });
    ascii.div_ceil(4) + other.div_ceil(2)
}

/// The newest turns of `history` (question and answer pairs, oldest first) that fit in `turns`
/// turns and `tokens` estimated tokens.
pub fn within_budget(history: &[Message], turns: usize, tokens: usize) -> Vec<Message> {
    let mut kept: VecDeque<Message> = VecDeque::new();
    let mut used = 0;
    // Walk back pair by pair so a question is never sent without its answer.
    for pair in history.rchunks(2) {
        let cost: usize = pair.iter().map(|m| estimate_tokens(&m.content)).sum();
        if kept.len() / 2 >= turns || used + cost > tokens {
            break;
        }
        used += cost;
        for m in pair.iter().rev() {
            kept.push_front(m.clone());
        }
    }
    kept.into()
}

/// Conversations remembered by this process: the newest `capacity` of them.
pub struct MemoryHistory {
    conversations: Mutex<HashMap<String, (u64, VecDeque<Message>)>>,
    /// Bumped on every use: the least recently used conversation has the smallest stamp.
    clock: AtomicU64,
    capacity: usize,
    keep_turns: usize,
}

impl MemoryHistory {
    pub fn new(capacity: usize, keep_turns: usize) -> Self {
        Self {
            conversations: Mutex::default(),
            clock: AtomicU64::new(0),
            capacity: capacity.max(1),
            keep_turns: keep_turns.max(1),
        }
    }

    fn stamp(&self) -> u64 {
        self.clock.fetch_add(1, Ordering::Relaxed)
    }

    /// The conversation's turns, oldest first (none for a new conversation).
    pub fn load(&self, conversation: &str) -> Vec<Message> {
        let stamp = self.stamp();
        let mut all = self.conversations.lock().unwrap();
        match all.get_mut(conversation) {
            Some((used, turns)) => {
                *used = stamp;
                turns.iter().cloned().collect()
            }
            None => Vec::new(),
        }
    }

    pub fn append(&self, conversation: &str, question: &Message, answer: &Message) {
        let stamp = self.stamp();
        let mut all = self.conversations.lock().unwrap();
        if !all.contains_key(conversation) && all.len() >= self.capacity {
            let oldest = all
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                all.remove(&oldest);
            }
        }
        let (used, turns) = all.entry(conversation.to_owned()).or_default();
        *used = stamp;
        turns.push_back(question.clone());
        turns.push_back(answer.clone());
        while turns.len() > self.keep_turns * 2 {
            turns.pop_front();
        }
    }

    /// Replaces the content of the conversation's last answer (what the user heard of it).
    pub fn correct_last_answer(&self, conversation: &str, content: &str) {
        let mut all = self.conversations.lock().unwrap();
        if let Some((_, turns)) = all.get_mut(conversation) {
            if let Some(last) = turns.back_mut().filter(|m| m.role == Role::Assistant) {
                last.content = content.to_owned();
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conversations.lock().unwrap().len()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("conversation memory (Redis at {url}) is unavailable: {reason}")]
pub struct HistoryError {
    url: String,
    reason: String,
}

/// Conversations kept in Redis.
pub struct RedisHistory {
    url: String,
    client: redis::Client,
    /// One multiplexed connection for every session, made on first use and remade after a
    /// failure (so the server keeps working, and recovers, while Redis is down).
    connection: tokio::sync::Mutex<Option<redis::aio::MultiplexedConnection>>,
    /// How long a silent conversation is kept.
    ttl: Duration,
    /// The most turns kept per conversation (older ones are trimmed away).
    keep_turns: usize,
    timeout: Duration,
}

impl RedisHistory {
    pub fn new(url: &str, ttl: Duration, keep_turns: usize) -> Result<Self, HistoryError> {
        let client = redis::Client::open(url).map_err(|e| HistoryError {
            url: redacted(url),
            reason: e.to_string(),
        })?;
        Ok(Self {
            url: redacted(url),
            client,
            connection: tokio::sync::Mutex::new(None),
            ttl,
            keep_turns: keep_turns.max(1),
            timeout: Duration::from_secs(2),
        })
    }

    fn fail(&self, reason: impl ToString) -> HistoryError {
        HistoryError {
            url: self.url.clone(),
            reason: reason.to_string(),
        }
    }

    async fn connection(&self) -> Result<redis::aio::MultiplexedConnection, HistoryError> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = tokio::time::timeout(self.timeout, self.client.get_multiplexed_async_connection())
            .await
            .map_err(|_| self.fail("no answer within 2 s"))?
            .map_err(|e| self.fail(e))?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` on the shared connection, dropping the connection if it fails.
    async fn with_connection<T>(
        &self,
        op: impl AsyncFnOnce(redis::aio::MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> Result<T, HistoryError> {
        let c = self.connection().await?;
        match tokio::time::timeout(self.timeout, op(c)).await {
            Ok(Ok(v)) => Ok(v),
            failed => {
                *self.connection.lock().await = None;
                Err(match failed {
                    Ok(Err(e)) => self.fail(e),
                    _ => self.fail("no answer within 2 s"),
                })
            }
        }
    }

    /// The conversation's turns, oldest first.
    pub async fn load(&self, conversation: &str) -> Result<Vec<Message>, HistoryError> {
        let key = key(conversation);
        let raw: Vec<String> = self
            .with_connection(async |mut c| c.lrange(&key, 0, -1).await)
            .await?;
        // An entry another program wrote badly is skipped, not fatal.
        Ok(raw
            .iter()
            .filter_map(|r| serde_json::from_str::<Message>(r).ok())
            .filter(|m| m.role != Role::System)
            .collect())
    }

    /// Appends one turn, trims the list and renews its lifetime, in one transaction.
    pub async fn append(
        &self,
        conversation: &str,
        question: &Message,
        answer: &Message,
    ) -> Result<(), HistoryError> {
        let key = key(conversation);
        let entries = [question, answer].map(|m| serde_json::to_string(m).unwrap_or_default());
        let keep = (self.keep_turns * 2) as isize;
        let ttl = self.ttl.as_secs().max(1) as i64;
        self.with_connection(async |mut c| {
            redis::pipe()
                .atomic()
                .rpush(&key, &entries)
                .ignore()
                .ltrim(&key, -keep, -1)
                .ignore()
                .expire(&key, ttl)
                .ignore()
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }
}

impl RedisHistory {
    /// Replaces the content of the conversation's last answer (what the user heard of it).
    pub async fn correct_last_answer(
        &self,
        conversation: &str,
        content: &str,
    ) -> Result<(), HistoryError> {
        let key = key(conversation);
        let answer = serde_json::to_string(&Message {
            role: Role::Assistant,
            content: content.to_owned(),
        })
        .unwrap_or_default();
        self.with_connection(async |mut c| c.lset(&key, -1, &answer).await)
            .await
    }
}

/// The URL without its password, for messages and logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(q: &str, a: &str) -> [Message; 2] {
        [
            Message {
                role: Role::User,
                content: q.into(),
            },
            Message {
                role: Role::Assistant,
                content: a.into(),
            },
        ]
    }

    #[test]
    fn the_budget_keeps_the_newest_whole_turns() {
        let history: Vec<Message> = [
            turn("one", "first answer"),
            turn("two", "second"),
            turn("three", "third"),
        ]
        .into_iter()
        .flatten()
        .collect();
        let all = within_budget(&history, 10, 1000);
        assert_eq!(all, history);
        let two = within_budget(&history, 2, 1000);
        assert_eq!(two, history[2..]);
        // "two"+"second" cost 1+2 tokens, "three"+"third" 2+2: 7 fits two turns, 6 only one.
        assert_eq!(within_budget(&history, 10, 7).len(), 4);
        assert_eq!(within_budget(&history, 10, 6), history[4..]);
        assert!(within_budget(&history, 10, 0).is_empty());
    }

    #[test]
    fn memory_keeps_the_newest_turns_of_the_newest_conversations() {
        let memory = MemoryHistory::new(2, 2);
        for (i, name) in ["a", "b", "a"].iter().enumerate() {
            let [q, a] = turn(&format!("q{i}"), &format!("a{i}"));
            memory.append(name, &q, &a);
        }
        assert_eq!(memory.load("a").len(), 4);
        let [q, a] = turn("q3", "a3");
        memory.append("a", &q, &a);
        let a_turns = memory.load("a");
        assert_eq!(a_turns.len(), 4, "two turns kept");
        assert_eq!(a_turns[0].content, "q2");
        // A third conversation pushes out the least recently used one ("b").
        memory.append("c", &q, &a);
        assert_eq!(memory.len(), 2);
        assert!(memory.load("b").is_empty());
        assert_eq!(memory.load("a").len(), 4);
    }

    #[test]
    fn tokens_are_estimated_per_script() {
        assert_eq!(estimate_tokens("abcdefgh"), 2);
        assert_eq!(estimate_tokens("سلام"), 2);
        assert_eq!(estimate_tokens(""), 0);
    }

    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(redacted("redis://:secret@db:6379/0"), "redis://…@db:6379/0");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
