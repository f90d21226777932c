//! A scripted OpenAI-compatible server on loopback: requests answered with chosen bytes at
//! chosen times. Tests drive the conversation with it (real HTTP and SSE framing, chunks cut
//! anywhere, pauses, errors), and `facecast bench --chat` times a reply without a real model.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The SSE bytes of chat-completion chunks carrying `deltas`.
pub fn sse(deltas: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in deltas {
        let chunk =
            serde_json::json!({"choices": [{"delta": {"content": d}, "finish_reason": null}]});
        out.extend_from_slice(format!("data: {chunk}\n\n").as_bytes());
    }
    out
}

/// What the server writes, in order: (pause in ms, bytes).
pub type Parts = Vec<(u64, Vec<u8>)>;

pub struct Scripted {
    pub base_url: String,
    /// Set once the server wrote its last byte (or the client went away).
    pub finished: Arc<AtomicBool>,
    /// Set when a write failed: the client closed the connection.
    pub client_gone: Arc<AtomicBool>,
    pub request: tokio::sync::oneshot::Receiver<serde_json::Value>,
    /// When each part was written.
    pub sent: Arc<Mutex<Vec<Instant>>>,
}

/// Serves one request: the status line, then `parts` (pause, bytes) one after another.
pub async fn scripted(status: &str, parts: Parts) -> Scripted {
    let (listener, base_url) = listen().await;
    let finished = Arc::new(AtomicBool::new(false));
    let client_gone = Arc::new(AtomicBool::new(false));
    let (tx, request) = tokio::sync::oneshot::channel();
    let sent = Arc::new(Mutex::new(Vec::new()));
    let (done, gone, sent_at) = (finished.clone(), client_gone.clone(), sent.clone());
    let status = status.to_owned();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("scripted server");
        serve(
            socket,
            &status,
            parts,
            |request| {
                let _ = tx.send(request);
            },
            &sent_at,
            &gone,
        )
        .await;
        done.store(true, Ordering::SeqCst);
    });
    Scripted {
        base_url,
        finished,
        client_gone,
        request,
        sent,
    }
}

/// A loopback listener and the API base URL it serves.
async fn listen() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("scripted server");
    let url = format!(
        "http://{}/v1",
        listener.local_addr().expect("scripted server")
    );
    (listener, url)
}

/// Reads one request, hands its JSON body to `on_request`, then answers with `status` and
/// `parts` (pause, bytes).
async fn serve(
    mut socket: tokio::net::TcpStream,
    status: &str,
    parts: Parts,
    on_request: impl FnOnce(serde_json::Value),
    sent_at: &Mutex<Vec<Instant>>,
    gone: &AtomicBool,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Headers, then a body of content-length bytes.
    let body = loop {
        let n = socket.read(&mut chunk).await.expect("scripted server");
        assert!(
            n > 0,
            "scripted server: the client closed before its request was complete"
        );
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().expect("scripted server"))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break buf[end + 4..end + 4 + len].to_vec();
            }
        }
    };
    on_request(serde_json::from_slice(&body).expect("scripted server"));
    let head = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    );
    socket
        .write_all(head.as_bytes())
        .await
        .expect("scripted server");
    for (pause, bytes) in parts {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        sent_at
            .lock()
            .expect("scripted server")
            .push(Instant::now());
        if socket.write_all(&bytes).await.is_err() || socket.flush().await.is_err() {
            gone.store(true, Ordering::SeqCst);
            break;
        }
    }
}

/// A scripted server for a whole conversation: the n-th request gets the n-th reply (status
/// and parts); each request's JSON body arrives on `requests`.
pub struct ScriptedConversation {
    pub base_url: String,
    /// What was asked (the benchmarks do not look).
    #[cfg_attr(not(test), allow(dead_code))]
    pub requests: tokio::sync::mpsc::UnboundedReceiver<serde_json::Value>,
}

pub async fn scripted_conversation(replies: Vec<(&str, Parts)>) -> ScriptedConversation {
    let (listener, base_url) = listen().await;
    let (tx, requests) = tokio::sync::mpsc::unbounded_channel();
    let replies: Vec<(String, Parts)> = replies
        .into_iter()
        .map(|(s, p)| (s.to_owned(), p))
        .collect();
    tokio::spawn(async move {
        let (sent, gone) = (Mutex::new(Vec::new()), AtomicBool::new(false));
        for (status, parts) in replies {
            let Ok((socket, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            serve(
                socket,
                &status,
                parts,
                move |r| {
                    let _ = tx.send(r);
                },
                &sent,
                &gone,
            )
            .await;
        }
    });
    ScriptedConversation { base_url, requests }
}
