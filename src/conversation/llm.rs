//! A streaming client for OpenAI-compatible `/v1/chat/completions` endpoints (SGLang, vLLM,
//! Ollama, llama.cpp server, hosted APIs): it posts the conversation with `stream: true` and
//! hands each content delta over as it arrives.

use super::sse::{parse_chunk, ChunkContent, SseDecoder, SseEvent};
use crate::config::LlmConfig;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Who wrote a message, as the chat completions API names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("cannot reach the language model at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the language model answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the language model sent nothing for {0} s")]
    Stalled(u64),
    #[error("the language model's stream broke off: {0}")]
    Broken(String),
    #[error("the language model reported an error: {0}")]
    Reported(String),
}

pub struct LlmClient {
    http: reqwest::Client,
    url: String,
    config: LlmConfig,
    api_key: Option<String>,
}

impl LlmClient {
    /// A client for `config`, or `None` when no endpoint is configured.
    pub fn new(config: &LlmConfig) -> anyhow::Result<Option<Self>> {
        let Some(base) = config.base_url.as_deref().filter(|b| !b.is_empty()) else {
            return Ok(None);
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(config.connect_timeout_secs.max(1)))
            .build()?;
        Ok(Some(Self {
            http,
            url: format!("{}/chat/completions", base.trim_end_matches('/')),
            api_key: std::env::var(&config.api_key_env)
                .ok()
                .filter(|k| !k.is_empty()),
            config: config.clone(),
        }))
    }

    pub fn config(&self) -> &LlmConfig {
        &self.config
    }

    /// Streams the model's answer to `messages`, calling `on_delta` with each piece of text.
    pub async fn stream(
        &self,
        messages: &[Message],
        mut on_delta: impl FnMut(&str),
    ) -> Result<(), LlmError> {
        let body = serde_json::json!({
            "model": self.config.model,
            "messages": messages,
            "stream": true,
            "temperature": self.config.temperature,
            "max_tokens": self.config.max_tokens,
        });
        let mut request = self.http.post(&self.url).json(&body);
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key);
        }
        let unreachable = |e: reqwest::Error| LlmError::Unreachable {
            url: self.url.clone(),
            reason: e.to_string(),
        };
        let idle = Duration::from_secs(self.config.idle_timeout_secs.max(1));
        let response = tokio::time::timeout(idle, request.send())
            .await
            .map_err(|_| LlmError::Stalled(idle.as_secs()))?
            .map_err(unreachable)?;
        let status = response.status();
        if !status.is_success() {
            let text = response.text().await.unwrap_or_default();
            let message = serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| text.chars().take(200).collect());
            return Err(LlmError::Status {
                status: status.as_u16(),
                message,
            });
        }
        let mut bytes = response.bytes_stream();
        let mut decoder = SseDecoder::default();
        loop {
            let next = tokio::time::timeout(idle, bytes.next())
                .await
                .map_err(|_| LlmError::Stalled(idle.as_secs()))?;
            let Some(chunk) = next else {
                // Closed without [DONE]: what arrived stands (some servers omit it).
                return Ok(());
            };
            let chunk = chunk.map_err(|e| LlmError::Broken(e.to_string()))?;
            for event in decoder
                .push(&chunk)
                .map_err(|e| LlmError::Broken(e.to_string()))?
            {
                let data = match event {
                    SseEvent::Done => return Ok(()),
                    SseEvent::Data(d) => d,
                };
                for content in parse_chunk(&data).map_err(LlmError::Broken)? {
                    match content {
                        ChunkContent::Delta(text) if !text.is_empty() => on_delta(&text),
                        ChunkContent::Error(e) => return Err(LlmError::Reported(e)),
                        _ => {}
                    }
                }
            }
        }
    }
}
