//! Server-sent events as OpenAI-compatible servers stream chat completions
//! (`text/event-stream`: `data: {json}` lines, a blank line after each event, `data: [DONE]` at
//! the end), decoded incrementally from whatever byte chunks the network delivers — a chunk
//! may end mid-line or mid-UTF-8 character.

use serde::Deserialize;

/// One event's `data` (its `data:` lines joined with newlines).
#[derive(Debug, Clone, PartialEq)]
pub enum SseEvent {
    Data(String),
    /// `data: [DONE]`: the stream is complete.
    Done,
}

/// Splits a byte stream into events.
#[derive(Default)]
pub struct SseDecoder {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// `data:` lines of the current event.
    data: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SseError {
    #[error("the stream is not UTF-8")]
    NotUtf8,
    #[error("a line longer than {0} bytes")]
    LineTooLong(usize),
}

/// Longest line accepted: a malicious or broken server cannot make us buffer without bound.
const MAX_LINE: usize = 1 << 20;

impl SseDecoder {
    /// Adds received bytes; returns the events they completed.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > MAX_LINE {
                    return Err(SseError::LineTooLong(MAX_LINE));
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8(line).map_err(|_| SseError::NotUtf8)?;
            if line.is_empty() {
                if !self.data.is_empty() {
                    let data = std::mem::take(&mut self.data).join("\n");
                    events.push(if data.trim() == "[DONE]" {
                        SseEvent::Done
                    } else {
                        SseEvent::Data(data)
                    });
                }
            } else if let Some(value) = line.strip_prefix("data:") {
                self.data
                    .push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
            // Comments (": keep-alive") and other fields (event:, id:, retry:) carry nothing
            // a chat completion needs.
        }
        Ok(events)
    }
}

/// What one streamed chat-completion chunk says.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkContent {
    /// Text to append to the reply (may be empty, e.g. the role-only first chunk).
    Delta(String),
    /// The server reported an error inside the stream.
    Error(String),
    /// The choice finished (`finish_reason` set).
    Finished(String),
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    error: Option<ErrorBody>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
}

/// Reads an event's JSON; `Err` names what was malformed.
pub fn parse_chunk(data: &str) -> Result<Vec<ChunkContent>, String> {
    let chunk: Chunk = serde_json::from_str(data)
        .map_err(|e| format!("malformed stream chunk ({e}): {}", truncate(data, 120)))?;
    if let Some(err) = chunk.error {
        return Ok(vec![ChunkContent::Error(
            err.message.unwrap_or_else(|| "unknown error".into()),
        )]);
    }
    let mut out = Vec::new();
    if let Some(choice) = chunk.choices.into_iter().next() {
        if let Some(text) = choice.delta.content {
            out.push(ChunkContent::Delta(text));
        }
        if let Some(reason) = choice.finish_reason {
            out.push(ChunkContent::Finished(reason));
        }
    }
    Ok(out)
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Vec<u8> {
        let mut s = String::new();
        s.push_str(": keep-alive\n\n");
        for piece in ["", "Sal", "ām — ", "سلام", " world."] {
            let chunk = serde_json::json!({"choices": [{"delta": {"content": piece}, "finish_reason": null}]});
            s.push_str(&format!("data: {chunk}\r\n\r\n"));
        }
        s.push_str("data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n");
        s.push_str("data: [DONE]\n\n");
        s.into_bytes()
    }

    fn decode(chunks: &[&[u8]]) -> (String, Vec<ChunkContent>, bool) {
        let mut d = SseDecoder::default();
        let (mut text, mut other, mut done) = (String::new(), Vec::new(), false);
        for c in chunks {
            for ev in d.push(c).unwrap() {
                match ev {
                    SseEvent::Done => done = true,
                    SseEvent::Data(data) => {
                        for content in parse_chunk(&data).unwrap() {
                            match content {
                                ChunkContent::Delta(t) => text.push_str(&t),
                                c => other.push(c),
                            }
                        }
                    }
                }
            }
        }
        (text, other, done)
    }

    #[test]
    fn deltas_survive_any_split_even_mid_character() {
        let bytes = stream();
        let whole = decode(&[&bytes]);
        assert_eq!(whole.0, "Salām — سلام world.");
        assert_eq!(whole.1, [ChunkContent::Finished("stop".into())]);
        assert!(whole.2);
        for cut in 0..bytes.len() {
            assert_eq!(
                decode(&[&bytes[..cut], &bytes[cut..]]),
                whole,
                "cut at {cut}"
            );
        }
        // One byte at a time.
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(decode(&singles), whole);
    }

    #[test]
    fn errors_in_and_of_the_stream() {
        assert_eq!(
            parse_chunk(r#"{"error": {"message": "model overloaded", "code": 503}}"#),
            Ok(vec![ChunkContent::Error("model overloaded".into())])
        );
        let err = parse_chunk("{\"choices\": [").unwrap_err();
        assert!(err.starts_with("malformed stream chunk"), "{err}");
        let mut d = SseDecoder::default();
        assert_eq!(d.push(b"data: \xff\xfe\n"), Err(SseError::NotUtf8));
        let mut d = SseDecoder::default();
        assert_eq!(
            d.push(&vec![b'x'; MAX_LINE + 1]),
            Err(SseError::LineTooLong(MAX_LINE))
        );
    }
}
