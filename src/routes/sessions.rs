//! `/api/v1/sessions…`: create, list, describe and end sessions; say, interrupt and chat; the
//! events WebSocket.

use super::{json_body, reject, with_state, State};
use crate::error::ApiError;
use crate::session::{CreateSession, SessionEvent};
use facecast_common::Emotion;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

pub fn routes(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    create(state.clone())
        .or(list(state.clone()))
        .or(get(state.clone()))
        .or(delete(state.clone()))
        .or(say(state.clone()))
        .or(interrupt(state.clone()))
        .or(chat(state.clone()))
        .or(events(state))
}

#[derive(Serialize)]
struct Created {
    id: String,
    whep_url: String,
    events_url: String,
}

/// `POST /api/v1/sessions` `{avatar?, engine?, lang?, tts?, voice?, conversation?, persona?}`
/// → `201 {id, whep_url, events_url}`.
fn create(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("api" / "v1" / "sessions")
        .and(warp::post())
        .and(
            // An empty body means "all defaults".
            warp::body::content_length_limit(limit)
                .and(warp::body::bytes())
                .and_then(|b: bytes::Bytes| async move {
                    if b.iter().all(u8::is_ascii_whitespace) {
                        return Ok(CreateSession::default());
                    }
                    serde_json::from_slice::<CreateSession>(&b).map_err(|e| {
                        reject(ApiError::bad_request(
                            "invalid_json",
                            format!("invalid JSON body: {e}"),
                        ))
                    })
                }),
        )
        .and(with_state(state))
        .and_then(|req: CreateSession, state: State| async move {
            let session = state.create(req).await.map_err(reject)?;
            let info = session.info();
            let body = Created {
                id: info.id.clone(),
                whep_url: info.whep_url,
                events_url: info.events_url,
            };
            Ok::<_, Rejection>(warp::reply::with_header(
                warp::reply::with_status(warp::reply::json(&body), StatusCode::CREATED),
                header::LOCATION,
                format!("/api/v1/sessions/{}", info.id),
            ))
        })
}

/// `GET /api/v1/sessions` → `200 [session…]`.
fn list(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: State| warp::reply::json(&state.list()))
}

/// `GET /api/v1/sessions/{id}` → `200 {session}`.
fn get(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String)
        .and(warp::get())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            let s = state.get(&id).map_err(reject)?;
            Ok::<_, Rejection>(warp::reply::json(&s.info()))
        })
}

/// `DELETE /api/v1/sessions/{id}` → `204`.
fn delete(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String)
        .and(warp::delete())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            // Setting a pipeline to Null waits for its streaming threads: off the runtime.
            let ended = tokio::task::spawn_blocking({
                let (state, id) = (state.clone(), id.clone());
                move || state.end(&id, "deleted")
            })
            .await
            .map_err(|e| {
                reject(ApiError::internal(format!(
                    "ending the session failed: {e}"
                )))
            })?;
            if !ended {
                return Err(reject(ApiError::session_not_found(&id)));
            }
            Ok(StatusCode::NO_CONTENT)
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SayRequest {
    text: String,
    emotion: Option<String>,
    intensity: Option<f64>,
}

/// `POST /api/v1/sessions/{id}/say` `{text, emotion?, intensity?}` → `202`; utterances queue.
fn say(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("api" / "v1" / "sessions" / String / "say")
        .and(warp::post())
        .and(json_body::<SayRequest>(limit))
        .and(with_state(state))
        .and_then(|id: String, req: SayRequest, state: State| async move {
            let session = state.get(&id).map_err(reject)?;
            let text = spoken_text(&req.text, state.config.max_text_chars, "say")?;
            let emotion = match req.emotion {
                Some(name) => Some((
                    name.parse::<Emotion>().map_err(|e| {
                        reject(ApiError::bad_request("unknown_emotion", e.to_string()))
                    })?,
                    req.intensity.unwrap_or(0.6).clamp(0.0, 1.0),
                )),
                None => None,
            };
            session.say(text, emotion);
            Ok::<_, Rejection>(warp::reply::with_status(
                warp::reply::json(&serde_json::json!({"queued": true})),
                StatusCode::ACCEPTED,
            ))
        })
}

/// `POST /api/v1/sessions/{id}/interrupt` → `202`: current and queued speech stop.
fn interrupt(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String / "interrupt")
        .and(warp::post())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            state.get(&id).map_err(reject)?.interrupt();
            Ok::<_, Rejection>(StatusCode::ACCEPTED)
        })
}

/// The trimmed text of a `say` or `chat`: not empty, at most `max` characters.
fn spoken_text<'a>(text: &'a str, max: usize, verb: &str) -> Result<&'a str, Rejection> {
    let text = text.trim();
    if text.is_empty() {
        return Err(reject(ApiError::bad_request(
            "empty_text",
            format!("nothing to {verb}: text is empty"),
        )));
    }
    if text.chars().count() > max {
        return Err(reject(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "text_too_long",
            format!("text is longer than {max} characters"),
        )));
    }
    Ok(text)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatRequest {
    text: String,
}

/// `POST /api/v1/sessions/{id}/chat` `{text}` → `202`: the avatar answers aloud (409 without a
/// language model).
fn chat(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("api" / "v1" / "sessions" / String / "chat")
        .and(warp::post())
        .and(json_body::<ChatRequest>(limit))
        .and(with_state(state))
        .and_then(|id: String, req: ChatRequest, state: State| async move {
            state.get(&id).map_err(reject)?;
            // The question's length is checked by `chat`, which also tells the session.
            let text = spoken_text(&req.text, usize::MAX, "answer")?;
            state.chat(&id, text).map_err(reject)?;
            Ok::<_, Rejection>(StatusCode::ACCEPTED)
        })
}

/// `GET /api/v1/sessions/{id}/events` (WebSocket): the session's events as JSON text frames.
fn events(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String / "events")
        .and(warp::get())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            state.get(&id).map(|s| s.subscribe()).map_err(reject)
        })
        .and(warp::ws())
        .map(
            |mut rx: tokio::sync::broadcast::Receiver<SessionEvent>, ws: warp::ws::Ws| {
                ws.on_upgrade(move |socket| async move {
                    let (mut tx, mut incoming) = socket.split();
                    loop {
                        tokio::select! {
                            ev = rx.recv() => match ev {
                                Ok(ev) => {
                                    let ended = matches!(ev, SessionEvent::SessionEnded { .. });
                                    let text = serde_json::to_string(&ev).expect("events serialise");
                                    if tx.send(warp::ws::Message::text(text)).await.is_err() || ended {
                                        break;
                                    }
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                                Err(_) => break,
                            },
                            msg = incoming.next() => match msg {
                                Some(Ok(m)) if !m.is_close() => continue,
                                _ => break,
                            },
                        }
                    }
                    let _ = tx.close().await;
                })
            },
        )
}
