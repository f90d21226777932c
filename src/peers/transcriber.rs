//! A scripted OpenAI-compatible transcription endpoint on loopback (`/v1/audio/transcriptions`):
//! each request's bytes are handed over, and each is answered as scripted: a text, an error
//! status, a crash or a stall. The WHIP tests and `facecast bench --turn` recognise with it.

use std::io::{BufRead, BufReader, Read, Write};
use std::time::Duration;

/// How the scripted transcription endpoint answers one request.
#[derive(Clone)]
// The benchmarks script only texts; the tests script the failures.
#[cfg_attr(not(test), allow(dead_code))]
pub enum Transcribed {
    Text(&'static str),
    /// An error status with a JSON error body.
    Status(u16),
    /// The connection closed with no answer (a crashed server).
    Closed,
    /// No answer for this long (a stalled server).
    Stalled(Duration),
}

/// A scripted OpenAI-compatible transcription endpoint: answers `text` to every request and
/// hands over each request's bytes.
pub fn transcriber(text: &'static str) -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    scripted_transcriber(vec![Transcribed::Text(text)])
}

/// The n-th request gets the n-th answer (the last one repeats).
pub fn scripted_transcriber(
    answers: Vec<Transcribed>,
) -> (String, std::sync::mpsc::Receiver<Vec<u8>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut all) = (0, Vec::new());
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                all.extend_from_slice(line.as_bytes());
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            all.extend(body);
            let _ = tx.send(all);
            let (status, body) = match answers[n.min(answers.len() - 1)].clone() {
                Transcribed::Text(text) => (200, format!(r#"{{"text":"{text}"}}"#)),
                Transcribed::Status(status) => (
                    status,
                    r#"{"error":{"message":"model overloaded"}}"#.to_owned(),
                ),
                Transcribed::Closed => continue,
                Transcribed::Stalled(d) => {
                    std::thread::sleep(d);
                    continue;
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, rx)
}
