//! HTTP routes (warp): the REST API, WHEP, the events WebSocket, health, metrics and the web
//! client. One filter function per route, handlers as plain async functions, every error
//! answered by [`crate::error::recover`] as JSON `{code, message}`.

use crate::error::{recover, ApiError};
use crate::session::{CreateSession, Registry};
use crate::signalling;
use facecast_common::Emotion;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

pub(crate) type State = Arc<Registry>;

pub(crate) fn with_state(
    state: State,
) -> impl Filter<Extract = (State,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// JSON body, at most `limit` bytes.
fn json_body<T: serde::de::DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limit).and(warp::body::json())
}

mod avatars;

/// Every route, with CORS and JSON errors.
pub fn routes(
    state: State,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let cors = cors(&state.config.allowed_origins);
    let api = create_session(state.clone())
        .or(list_sessions(state.clone()))
        .or(get_session(state.clone()))
        .or(delete_session(state.clone()))
        .or(say(state.clone()))
        .or(interrupt(state.clone()))
        .or(chat(state.clone()))
        .or(events(state.clone()))
        .or(whep_offer(state.clone()))
        .or(whep_patch(state.clone()))
        .or(whep_delete(state.clone()))
        .or(avatars::routes(state.clone()))
        .or(health_live())
        .or(health_ready(state.clone()))
        .or(metrics(state.clone()))
        // Errors get CORS headers too, or a page on another origin cannot read them.
        .recover(recover)
        .with(cors);
    let web = warp::get().and(warp::fs::dir(state.config.web_dir.clone()));
    web.or(api).recover(recover)
}

fn cors(origins: &[String]) -> warp::cors::Builder {
    let c = warp::cors()
        .allow_methods(["GET", "POST", "PATCH", "DELETE", "OPTIONS"])
        .allow_headers(["content-type", "authorization", "if-match"])
        .expose_headers(["location", "etag", "link", "retry-after"]);
    if origins.iter().any(|o| o == "*") {
        c.allow_any_origin()
    } else {
        c.allow_origins(origins.iter().map(String::as_str))
    }
}

#[derive(Serialize)]
struct Created {
    id: String,
    whep_url: String,
    events_url: String,
}

/// `POST /api/v1/sessions` `{avatar?, engine?, lang?, tts?, voice?, conversation?}` →
/// `201 {id, whep_url, events_url}`.
fn create_session(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
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
                        warp::reject::custom(ApiError::bad_request(
                            "invalid_json",
                            format!("invalid JSON body: {e}"),
                        ))
                    })
                }),
        )
        .and(with_state(state))
        .and_then(|req: CreateSession, state: State| async move {
            let session = state.create(req).map_err(warp::reject::custom)?;
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
fn list_sessions(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: State| warp::reply::json(&state.list()))
}

/// `GET /api/v1/sessions/{id}` → `200 {session}`.
fn get_session(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String)
        .and(warp::get())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            let s = state.get(&id).map_err(warp::reject::custom)?;
            Ok::<_, Rejection>(warp::reply::json(&s.info()))
        })
}

/// `DELETE /api/v1/sessions/{id}` → `204`.
fn delete_session(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String)
        .and(warp::delete())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            if !state.end(&id, "deleted") {
                return Err(warp::reject::custom(ApiError::session_not_found(&id)));
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
            let session = state.get(&id).map_err(warp::reject::custom)?;
            let text = spoken_text(&req.text, state.config.max_text_chars, "say")?;
            let emotion = match req.emotion {
                Some(name) => Some((
                    name.parse::<Emotion>().map_err(|e| {
                        warp::reject::custom(ApiError::bad_request(
                            "unknown_emotion",
                            e.to_string(),
                        ))
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
            state.get(&id).map_err(warp::reject::custom)?.interrupt();
            Ok::<_, Rejection>(StatusCode::ACCEPTED)
        })
}

/// The trimmed text of a `say` or `chat`: not empty, at most `max` characters.
fn spoken_text<'a>(text: &'a str, max: usize, verb: &str) -> Result<&'a str, Rejection> {
    let text = text.trim();
    if text.is_empty() {
        return Err(warp::reject::custom(ApiError::bad_request(
            "empty_text",
            format!("nothing to {verb}: text is empty"),
        )));
    }
    if text.chars().count() > max {
        return Err(warp::reject::custom(ApiError::new(
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
            // The question's length is checked by `chat`, which also tells the session.
            let text = spoken_text(&req.text, usize::MAX, "answer")?;
            state.chat(&id, text).map_err(warp::reject::custom)?;
            Ok::<_, Rejection>(StatusCode::ACCEPTED)
        })
}

/// `GET /api/v1/sessions/{id}/events` (WebSocket): the session's events as JSON text frames.
fn events(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String / "events")
        .and(warp::get())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            state.get(&id).map(|s| s.subscribe()).map_err(warp::reject::custom)
        })
        .and(warp::ws())
        .map(|mut rx: tokio::sync::broadcast::Receiver<crate::session::SessionEvent>, ws: warp::ws::Ws| {
            ws.on_upgrade(move |socket| async move {
                let (mut tx, mut incoming) = socket.split();
                loop {
                    tokio::select! {
                        ev = rx.recv() => match ev {
                            Ok(ev) => {
                                let ended = matches!(ev, crate::session::SessionEvent::SessionEnded { .. });
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
        })
}

/// `POST /whep/{id}` (`application/sdp` offer) → `201` + SDP answer + `Location`.
fn whep_offer(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("whep" / String)
        .and(warp::post())
        .and(sdp_content_type("application/sdp"))
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .and(with_state(state))
        .and_then(|id: String, body: bytes::Bytes, state: State| async move {
            let offer = std::str::from_utf8(&body).map_err(|_| {
                warp::reject::custom(ApiError::bad_request(
                    "malformed_sdp",
                    "the offer is not UTF-8 text",
                ))
            })?;
            let (viewer, answer) = state
                .add_viewer(&id, offer)
                .await
                .map_err(warp::reject::custom)?;
            let location = format!("/whep/{id}/{viewer}");
            let reply = warp::reply::with_status(answer, StatusCode::CREATED);
            let reply = warp::reply::with_header(reply, header::CONTENT_TYPE, "application/sdp");
            Ok::<_, Rejection>(warp::reply::with_header(reply, header::LOCATION, location))
        })
}

/// Requires the request's Content-Type to be `expected` (415 otherwise).
fn sdp_content_type(
    expected: &'static str,
) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("content-type")
        .and_then(move |ct: Option<String>| async move {
            match ct {
                Some(ct)
                    if ct
                        .split(';')
                        .next()
                        .map(str::trim)
                        .is_some_and(|t| t.eq_ignore_ascii_case(expected)) =>
                {
                    Ok(())
                }
                other => Err(warp::reject::custom(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!(
                        "expected Content-Type {expected}, got {}",
                        other.as_deref().unwrap_or("none")
                    ),
                ))),
            }
        })
        .untuple_one()
}

/// `PATCH /whep/{id}/{viewer}` (`application/trickle-ice-sdpfrag`) → `204`.
fn whep_patch(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("whep" / String / String)
        .and(warp::patch())
        .and(sdp_content_type("application/trickle-ice-sdpfrag"))
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .and(with_state(state))
        .and_then(
            |id: String, viewer: String, body: bytes::Bytes, state: State| async move {
                let session = state.get(&id).map_err(warp::reject::custom)?;
                let not_found = || {
                    warp::reject::custom(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "viewer_not_found",
                        format!("no viewer '{viewer}' in session '{id}'"),
                    ))
                };
                let mids = session.viewer_mids(&viewer).ok_or_else(not_found)?;
                let fragment = std::str::from_utf8(&body).map_err(|_| {
                    warp::reject::custom(ApiError::bad_request("malformed_fragment", "not UTF-8"))
                })?;
                let candidates = signalling::parse_trickle(fragment, &mids).map_err(|e| {
                    warp::reject::custom(ApiError::bad_request("malformed_fragment", e.to_string()))
                })?;
                if !session.add_candidates(&viewer, &candidates) {
                    return Err(not_found());
                }
                Ok(StatusCode::NO_CONTENT)
            },
        )
}

/// `DELETE /whep/{id}/{viewer}` → `204`: the viewer leaves.
fn whep_delete(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("whep" / String / String)
        .and(warp::delete())
        .and(with_state(state))
        .and_then(|id: String, viewer: String, state: State| async move {
            state.get(&id).map_err(warp::reject::custom)?;
            if !state.remove_viewer(&id, &viewer) {
                return Err(warp::reject::custom(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "viewer_not_found",
                    format!("no viewer '{viewer}' in session '{id}'"),
                )));
            }
            Ok(StatusCode::NO_CONTENT)
        })
}

/// `GET /health/live` → `200` while the process serves.
fn health_live() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("health" / "live")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})))
}

/// `GET /health/ready` → `200` when GStreamer and every element a session needs are usable.
fn health_ready(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("health" / "ready")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: State| {
            let missing: Vec<&str> = crate::serve::required_elements(state.config.video.codec)
                .into_iter()
                .filter(|f| gst::ElementFactory::find(f).is_none())
                .collect();
            let status = if missing.is_empty() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(
                warp::reply::json(&serde_json::json!({
                    "status": if missing.is_empty() { "ready" } else { "not_ready" },
                    "missing_elements": missing,
                })),
                status,
            )
        })
}

/// `GET /metrics` → Prometheus text.
fn metrics(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("metrics")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: State| {
            warp::reply::with_header(
                state.metrics.render(),
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4",
            )
        })
}

#[cfg(test)]
mod tests {
    //! Every route and its errors, through `warp::test` (no sockets).

    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use warp::http::Response;

    fn state(config: Config) -> State {
        gst::init().unwrap();
        crate::plugins::register().ok();
        // Every test of this process shares one avatar store, in a temporary folder.
        static DATA: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
        let data = DATA.get_or_init(|| tempfile::tempdir().unwrap());
        gstfacecastavatar::registered::store::AvatarStore::init_global(data.path(), 4);
        Registry::new(Arc::new(config), Arc::new(Metrics::new()))
    }

    /// Loads ONNX Runtime (`ORT_DYLIB_PATH`, else the copy in `.cache/`), checks that the
    /// `needed` files (relative to the project) exist, and returns the test models folder.
    fn test_assets(needed: &[&str]) -> std::path::PathBuf {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let lib = std::env::var_os("ORT_DYLIB_PATH")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| root.join(".cache/onnxruntime/libonnxruntime.so.1.31.1"));
        for file in needed.iter().map(|n| root.join(n)).chain([lib.clone()]) {
            assert!(
                file.is_file(),
                "test asset missing: {} (run scripts/fetch-test-assets.sh)",
                file.display()
            );
        }
        facecast_common::onnx::runtime(Some(&lib)).unwrap();
        root.join(".cache/models")
    }

    /// A `multipart/form-data` body of text fields and at most one file.
    fn multipart(fields: &[(&str, &str)], file: Option<&[u8]>) -> (String, Vec<u8>) {
        let boundary = "facecast-test-boundary";
        let mut body = Vec::new();
        for (name, value) in fields {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                    .as_bytes(),
            );
        }
        if let Some(file) = file {
            body.extend_from_slice(
                format!("--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"photo.png\"\r\nContent-Type: image/png\r\n\r\n").as_bytes(),
            );
            body.extend_from_slice(file);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), body)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn avatars_register_list_use_and_delete() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let portrait = root.join(".cache/media/astronaut.png");
        let models = test_assets(&[
            ".cache/media/astronaut.png",
            ".cache/models/yunet_n_dynamic.onnx",
        ]);
        let routes = routes(state(Config {
            models_dir: models,
            ..Config::default()
        }));
        let photo = std::fs::read(&portrait).unwrap();
        let post = |fields: &[(&str, &str)], file: Option<&[u8]>| {
            let (ctype, body) = multipart(fields, file);
            warp::test::request()
                .method("POST")
                .path("/api/v1/avatars")
                .header("content-type", ctype)
                .body(body)
        };

        let r = post(&[("name", "astro")], Some(&photo))
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.body());
        let j = json(&r);
        assert_eq!(
            (j["name"].as_str(), j["kind"].as_str(), j["frames"].as_u64()),
            (Some("astro"), Some("image"), Some(1))
        );
        assert_eq!(
            (j["width"].as_u64(), j["height"].as_u64()),
            (Some(512), Some(512))
        );

        let r = warp::test::request()
            .path("/api/v1/avatars")
            .reply(&routes)
            .await;
        assert!(json(&r)
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "astro"));
        let r = warp::test::request()
            .path("/api/v1/avatars/astro")
            .reply(&routes)
            .await;
        let face = json(&r)["face"].clone();
        let (x, y) = (face[0].as_u64().unwrap(), face[1].as_u64().unwrap());
        assert!((172..=188).contains(&x) && (51..=67).contains(&y), "{face}");

        // Registering the same name again is a conflict; bad names and bad files are refused.
        assert_error(
            &post(&[("name", "astro")], Some(&photo))
                .reply(&routes)
                .await,
            409,
            "avatar_exists",
        );
        assert_error(
            &post(&[("name", "../up")], Some(&photo))
                .reply(&routes)
                .await,
            400,
            "bad_avatar_name",
        );
        assert_error(
            &post(&[("name", "junk")], Some(b"not an image"))
                .reply(&routes)
                .await,
            422,
            "undecodable",
        );
        assert_error(
            &post(&[("name", "nofile")], None).reply(&routes).await,
            400,
            "invalid_upload",
        );
        assert_error(
            &post(&[("colour", "red")], Some(&photo))
                .reply(&routes)
                .await,
            400,
            "invalid_upload",
        );
        assert_error(
            &post(&[("name", "b"), ("face_box", "1,2")], Some(&photo))
                .reply(&routes)
                .await,
            400,
            "invalid_upload",
        );
        let r = warp::test::request()
            .method("POST")
            .path("/api/v1/avatars")
            .header("content-type", "multipart/form-data; boundary=x")
            .body("garbage")
            .reply(&routes)
            .await;
        assert_error(&r, 400, "invalid_upload");

        // A registered avatar needs the neural engine, and none is configured here.
        for (body, status, code) in [
            (r#"{"avatar": "astro"}"#, 409, "no_lipsync_model"),
            (
                r#"{"avatar": "astro", "engine": "viseme"}"#,
                400,
                "engine_mismatch",
            ),
            (r#"{"engine": "magic"}"#, 400, "unknown_engine"),
            (r#"{"avatar": "../etc"}"#, 400, "bad_avatar_name"),
        ] {
            let r = warp::test::request()
                .method("POST")
                .path("/api/v1/sessions")
                .body(body)
                .reply(&routes)
                .await;
            assert_error(&r, status, code);
        }

        let r = warp::test::request().path("/metrics").reply(&routes).await;
        let text = String::from_utf8_lossy(r.body()).into_owned();
        assert!(text.contains("facecast_avatar_cache_hits_total"), "{text}");

        let r = warp::test::request()
            .method("DELETE")
            .path("/api/v1/avatars/astro")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = warp::test::request()
            .path("/api/v1/avatars/astro")
            .reply(&routes)
            .await;
        assert_error(&r, 404, "avatar_not_found");
        let r = warp::test::request()
            .method("DELETE")
            .path("/api/v1/avatars/astro")
            .reply(&routes)
            .await;
        assert_error(&r, 404, "avatar_not_found");
    }

    fn json(r: &Response<bytes::Bytes>) -> serde_json::Value {
        serde_json::from_slice(r.body()).unwrap_or_else(|_| panic!("not JSON: {:?}", r.body()))
    }

    /// Asserts an error answer: status and `{code, message}`.
    fn assert_error(r: &Response<bytes::Bytes>, status: u16, code: &str) {
        assert_eq!(r.status().as_u16(), status, "{:?}", r.body());
        let j = json(r);
        assert_eq!(j["code"], code, "{j}");
        assert!(!j["message"].as_str().unwrap().is_empty());
    }

    async fn create(
        routes: &(impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible>
              + Clone
              + 'static),
    ) -> String {
        let r = warp::test::request()
            .method("POST")
            .path("/api/v1/sessions")
            .body("{}")
            .reply(routes)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.body());
        json(&r)["id"].as_str().unwrap().to_owned()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn piper_sessions() {
        let models = test_assets(&[".cache/models/piper/en_US-joe-medium.onnx.json"]);
        let routes = routes(state(Config {
            models_dir: models,
            ..Config::default()
        }));
        let post = |body: &'static str| {
            warp::test::request()
                .method("POST")
                .path("/api/v1/sessions")
                .body(body)
        };
        // By name: found in the configured models folder's piper/.
        let body = r#"{"tts": "piper", "voice": "en_US-joe-medium"}"#.to_owned();
        let r = warp::test::request()
            .method("POST")
            .path("/api/v1/sessions")
            .body(body.clone())
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.body());
        let id = json(&r)["id"].as_str().unwrap().to_owned();
        let r = warp::test::request()
            .path(&format!("/api/v1/sessions/{id}"))
            .reply(&routes)
            .await;
        assert_eq!(json(&r)["tts"], "piper");
        assert_eq!(json(&r)["conversation"], id.as_str());
        let r = warp::test::request()
            .method("POST")
            .path(&format!("/api/v1/sessions/{id}/say"))
            .body(r#"{"text": "Hello from a neural voice."}"#)
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        // An English voice cannot speak a Persian session.
        let body = body.replace(r#""tts""#, r#""lang": "fa", "tts""#);
        let r = warp::test::request()
            .method("POST")
            .path("/api/v1/sessions")
            .body(body)
            .reply(&routes)
            .await;
        assert_error(&r, 400, "voice_language_mismatch");
        let r = post(r#"{"tts": "piper", "voice": "en_US-nobody-low"}"#)
            .reply(&routes)
            .await;
        assert_error(&r, 400, "unknown_voice");
        assert!(json(&r)["message"]
            .as_str()
            .unwrap()
            .contains("rhasspy/piper-voices"));
    }

    async fn offer() -> String {
        crate::signalling::tests::webrtcbin_offer().await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn session_lifecycle_and_errors() {
        let routes = routes(state(Config {
            max_sessions: 2,
            ..Config::default()
        }));
        let id = create(&routes).await;

        let r = warp::test::request()
            .path("/api/v1/sessions")
            .reply(&routes)
            .await;
        assert_eq!(json(&r).as_array().unwrap().len(), 1);
        let r = warp::test::request()
            .path(&format!("/api/v1/sessions/{id}"))
            .reply(&routes)
            .await;
        assert_eq!(json(&r)["whep_url"], format!("/whep/{id}"));
        let r = warp::test::request()
            .path("/api/v1/sessions/nope")
            .reply(&routes)
            .await;
        assert_error(&r, 404, "session_not_found");

        // Bad creation requests.
        for (body, status, code) in [
            (r#"{"lang": 5}"#, 400, "invalid_json"),
            (r#"{"colour": "red"}"#, 400, "invalid_json"),
            (r#"{"#, 400, "invalid_json"),
            (r#"{"avatar": "anna"}"#, 404, "avatar_not_found"),
            (r#"{"lang": "xx-nonexistent"}"#, 400, "unknown_voice"),
            (r#"{"tts": "festival"}"#, 400, "unknown_tts"),
            (
                r#"{"tts": "piper", "voice": "/nonexistent/v.onnx"}"#,
                400,
                "unknown_voice",
            ),
            (r#"{"conversation": "../../etc"}"#, 400, "bad_conversation"),
        ] {
            let r = warp::test::request()
                .method("POST")
                .path("/api/v1/sessions")
                .body(body)
                .reply(&routes)
                .await;
            assert_error(&r, status, code);
        }
        let big = format!(r#"{{"lang": "{}"}}"#, "x".repeat(70_000));
        let r = warp::test::request()
            .method("POST")
            .path("/api/v1/sessions")
            .body(big)
            .reply(&routes)
            .await;
        assert_error(&r, 413, "body_too_large");

        // The limit: a second session fits, a third gets 503 with Retry-After.
        let second = create(&routes).await;
        let r = warp::test::request()
            .method("POST")
            .path("/api/v1/sessions")
            .body("{}")
            .reply(&routes)
            .await;
        assert_error(&r, 503, "too_many_sessions");
        assert!(r.headers().get("retry-after").is_some());

        let r = warp::test::request()
            .method("DELETE")
            .path(&format!("/api/v1/sessions/{second}"))
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = warp::test::request()
            .method("DELETE")
            .path(&format!("/api/v1/sessions/{second}"))
            .reply(&routes)
            .await;
        assert_error(&r, 404, "session_not_found");

        let r = warp::test::request()
            .path("/api/v1/nothing-here")
            .reply(&routes)
            .await;
        assert_error(&r, 404, "not_found");
        let r = warp::test::request()
            .method("PUT")
            .path(&format!("/api/v1/sessions/{id}"))
            .reply(&routes)
            .await;
        assert!(r.status().is_client_error());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn say_interrupt_and_events() {
        let routes = routes(state(Config::default()));
        let id = create(&routes).await;
        let say = |body: String, id: String| {
            warp::test::request()
                .method("POST")
                .path(&format!("/api/v1/sessions/{id}/say"))
                .header("content-type", "application/json")
                .body(body)
        };

        let mut ws = warp::test::ws()
            .path(&format!("/api/v1/sessions/{id}/events"))
            .handshake(routes.clone())
            .await
            .expect("events socket opens");

        let r = say(
            r#"{"text": "Hello there.", "emotion": "happy", "intensity": 0.9}"#.into(),
            id.clone(),
        )
        .reply(&routes)
        .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let first = tokio::time::timeout(std::time::Duration::from_secs(5), ws.recv())
            .await
            .expect("an event within 5 s")
            .unwrap();
        let ev: serde_json::Value = serde_json::from_str(first.to_str().unwrap()).unwrap();
        assert_eq!(ev["type"], "speech_started");
        assert_eq!(ev["text"], "Hello there.");

        for (body, status, code) in [
            (r#"{"text": ""}"#.to_string(), 400, "empty_text"),
            (r#"{"text": "   "}"#.to_string(), 400, "empty_text"),
            (r#"{"text": 42}"#.to_string(), 400, "invalid_json"),
            (r#"{"words": "hi"}"#.to_string(), 400, "invalid_json"),
            (
                r#"{"text": "hi", "emotion": "furious"}"#.to_string(),
                400,
                "unknown_emotion",
            ),
            (
                format!(r#"{{"text": "{}"}}"#, "a".repeat(2001)),
                413,
                "text_too_long",
            ),
            (
                format!(r#"{{"text": "{}"}}"#, "a".repeat(70_000)),
                413,
                "body_too_large",
            ),
        ] {
            let r = say(body.clone(), id.clone()).reply(&routes).await;
            assert_error(&r, status, code);
        }
        let r = say(r#"{"text": "hi"}"#.into(), "nope".into())
            .reply(&routes)
            .await;
        assert_error(&r, 404, "session_not_found");

        let r = warp::test::request()
            .method("POST")
            .path(&format!("/api/v1/sessions/{id}/interrupt"))
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let r = warp::test::request()
            .method("POST")
            .path("/api/v1/sessions/nope/interrupt")
            .reply(&routes)
            .await;
        assert_error(&r, 404, "session_not_found");
        let r = warp::test::request()
            .path("/api/v1/sessions/nope/events")
            .reply(&routes)
            .await;
        assert_error(&r, 404, "session_not_found");

        // Deleting the session tells the events socket.
        warp::test::request()
            .method("DELETE")
            .path(&format!("/api/v1/sessions/{id}"))
            .reply(&routes)
            .await;
        let mut ended = false;
        while let Ok(Ok(m)) =
            tokio::time::timeout(std::time::Duration::from_secs(5), ws.recv()).await
        {
            if let Ok(t) = m.to_str() {
                ended |= t.contains("session_ended");
            }
        }
        assert!(ended);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn whep_offer_trickle_delete_and_errors() {
        let routes = routes(state(Config::default()));
        let id = create(&routes).await;
        let sdp = offer().await;
        let post = |body: String, ct: &'static str, id: &str| {
            warp::test::request()
                .method("POST")
                .path(&format!("/whep/{id}"))
                .header("content-type", ct)
                .body(body)
        };

        let r = post(sdp.clone(), "application/sdp", &id)
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.body());
        assert_eq!(r.headers()["content-type"], "application/sdp");
        let location = r.headers()["location"].to_str().unwrap().to_owned();
        assert!(location.starts_with(&format!("/whep/{id}/")));
        let answer = std::str::from_utf8(r.body()).unwrap();
        assert!(
            answer.contains("m=video") && answer.contains("VP8/90000"),
            "{answer}"
        );
        assert!(answer.contains("a=sendonly"), "{answer}");
        assert!(
            answer.contains("a=candidate"),
            "answer has no candidates: {answer}"
        );

        let r = warp::test::request()
            .path(&format!("/api/v1/sessions/{id}"))
            .reply(&routes)
            .await;
        assert_eq!(json(&r)["viewers"], 1);

        // Trickle ICE.
        let patch = |body: &str, ct: &'static str, path: &str| {
            warp::test::request()
                .method("PATCH")
                .path(path)
                .header("content-type", ct)
                .body(body)
        };
        let frag = "a=mid:video0\r\na=candidate:1 1 UDP 2122252543 127.0.0.1 40000 typ host\r\n";
        let mid_frag = frag.replace(
            "video0",
            sdp.lines()
                .find_map(|l| l.strip_prefix("a=mid:"))
                .unwrap()
                .trim(),
        );
        let r = patch(&mid_frag, "application/trickle-ice-sdpfrag", &location)
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.body());
        let r = patch(&mid_frag, "application/sdp", &location)
            .reply(&routes)
            .await;
        assert_error(&r, 415, "unsupported_media_type");
        let r = patch("nonsense", "application/trickle-ice-sdpfrag", &location)
            .reply(&routes)
            .await;
        assert_error(&r, 400, "malformed_fragment");
        let r = patch(
            &mid_frag,
            "application/trickle-ice-sdpfrag",
            &format!("/whep/{id}/v999"),
        )
        .reply(&routes)
        .await;
        assert_error(&r, 404, "viewer_not_found");

        // Bad offers.
        let r = post(sdp.clone(), "text/plain", &id).reply(&routes).await;
        assert_error(&r, 415, "unsupported_media_type");
        let r = post("this is not SDP".into(), "application/sdp", &id)
            .reply(&routes)
            .await;
        assert_error(&r, 400, "malformed_sdp");
        let no_codecs = sdp
            .replace("VP8/90000", "AV1/90000")
            .replace("OPUS/48000", "PCMU/8000");
        let r = post(no_codecs, "application/sdp", &id).reply(&routes).await;
        assert_error(&r, 406, "unsupported_offer");
        let r = post(sdp.clone(), "application/sdp", "nope")
            .reply(&routes)
            .await;
        assert_error(&r, 404, "session_not_found");
        let r = post(
            "v=0\r\n".to_owned() + &"a=x\r\n".repeat(20_000),
            "application/sdp",
            &id,
        )
        .reply(&routes)
        .await;
        assert_error(&r, 413, "body_too_large");

        // Leaving.
        let r = warp::test::request()
            .method("DELETE")
            .path(&location)
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        let r = warp::test::request()
            .method("DELETE")
            .path(&location)
            .reply(&routes)
            .await;
        assert_error(&r, 404, "viewer_not_found");
        let r = warp::test::request()
            .path(&format!("/api/v1/sessions/{id}"))
            .reply(&routes)
            .await;
        assert_eq!(json(&r)["viewers"], 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cors_health_and_metrics() {
        let routes = routes(state(Config {
            allowed_origins: vec!["https://player.example".into()],
            ..Config::default()
        }));
        let preflight = |origin: &str| {
            warp::test::request()
                .method("OPTIONS")
                .path("/whep/some-session")
                .header("origin", origin)
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "content-type")
        };
        let r = preflight("https://player.example").reply(&routes).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://player.example"
        );
        let r = preflight("https://evil.example").reply(&routes).await;
        assert_error(&r, 403, "cors_forbidden");

        let r = warp::test::request()
            .path("/health/live")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::OK);
        let r = warp::test::request()
            .path("/health/ready")
            .reply(&routes)
            .await;
        assert_eq!(r.status(), StatusCode::OK, "{:?}", r.body());
        assert_eq!(json(&r)["status"], "ready");
        create(&routes).await;
        let r = warp::test::request().path("/metrics").reply(&routes).await;
        let text = std::str::from_utf8(r.body()).unwrap();
        assert!(text.contains("facecast_sessions_active 1"), "{text}");
        for name in [
            "facecast_viewers",
            "facecast_frames_produced_total",
            "facecast_say_to_first_frame_seconds",
        ] {
            assert!(text.contains(name), "{name} missing");
        }
    }
}
