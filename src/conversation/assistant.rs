//! What answers a session's questions: the language model, its personas, and where
//! conversations are remembered. One per server, built from the configuration at start.

use super::history::{MemoryHistory, RedisHistory};
use super::llm::LlmClient;
use crate::config::Config;
use anyhow::Context;
use std::collections::HashMap;
use std::time::Duration;

pub struct Assistant {
    pub llm: LlmClient,
    /// The system prompt read from `llm.persona`.
    pub persona: Option<String>,
    /// Avatars' own personas (`llm.avatar_personas`), read.
    pub avatar_personas: HashMap<String, String>,
    /// The conversations this process remembers (and the fallback while Redis is down).
    pub memory: MemoryHistory,
    /// Set when `llm.redis_url` is.
    pub shared_memory: Option<RedisHistory>,
}

impl Assistant {
    /// The assistant `config` describes; `None` when no language model is configured.
    /// Reads the persona files (a missing one is logged and skipped).
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Assistant>> {
        let Some(llm) = LlmClient::new(&config.llm).context("language model client")? else {
            return Ok(None);
        };
        let read = |p: &std::path::Path| match std::fs::read_to_string(p) {
            Ok(text) => Some(text.trim().to_owned()),
            Err(e) => {
                tracing::warn!("cannot read persona {}: {e}", p.display());
                None
            }
        };
        let persona = config.llm.persona.as_deref().and_then(read);
        let avatar_personas = config
            .llm
            .avatar_personas
            .iter()
            .filter_map(|(avatar, p)| Some((avatar.clone(), read(p)?)))
            .collect();
        let shared_memory = match config.llm.redis_url.as_deref() {
            None => None,
            Some(url) => Some(RedisHistory::new(
                url,
                Duration::from_secs(config.llm.history_ttl_secs),
                config.llm.history_turns,
            )?),
        };
        Ok(Some(Assistant {
            llm,
            persona,
            avatar_personas,
            memory: MemoryHistory::new(config.llm.memory_conversations, config.llm.history_turns),
            shared_memory,
        }))
    }
}
