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
    facecast_avatars::store::AvatarStore::init_global(data.path(), 4);
    Registry::new(Arc::new(config), Arc::new(Metrics::new()))
}

/// Loads ONNX Runtime, checks that the `needed` files (relative to the project) exist, and
/// returns the test models folder.
fn test_assets(needed: &[&str]) -> std::path::PathBuf {
    facecast_testkit::onnx_runtime();
    needed.iter().for_each(|n| {
        facecast_testkit::asset(n);
    });
    facecast_testkit::models_dir()
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
    let portrait = facecast_testkit::portrait();
    let models = test_assets(&[
        ".cache/media/astronaut.png",
        ".cache/models/yunet_n_dynamic.onnx",
    ]);
    let routes = routes(state(Config {
        models_dir: models,
        ..Config::default()
    }));
    let photo = std::fs::read(&portrait).unwrap();
    let post = async |fields: &[(&str, &str)], file: Option<&[u8]>| {
        let (ctype, body) = multipart(fields, file);
        call(
            &routes,
            "POST",
            "/api/v1/avatars",
            &[("content-type", &ctype)],
            body,
        )
        .await
    };

    let r = post(&[("name", "astro")], Some(&photo)).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.body());
    let j = json(&r);
    assert_eq!(
        (j["name"].as_str(), j["kind"].as_str(), j["frames"].as_u64()),
        (Some("astro"), Some("image"), Some(1))
    );
    assert_eq!(j["decoder"].as_str(), Some("pngdec"));
    assert_eq!(
        (j["width"].as_u64(), j["height"].as_u64()),
        (Some(512), Some(512))
    );

    let r = call(&routes, "GET", "/api/v1/avatars", &[], "").await;
    assert!(json(&r)
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "astro"));
    let r = call(&routes, "GET", "/api/v1/avatars/astro", &[], "").await;
    let face = json(&r)["face"].clone();
    let (x, y) = (face[0].as_u64().unwrap(), face[1].as_u64().unwrap());
    assert!((172..=188).contains(&x) && (51..=67).contains(&y), "{face}");

    // Registering the same name again is a conflict; bad names and bad files are refused.
    assert_error(
        &post(&[("name", "astro")], Some(&photo)).await,
        409,
        "avatar_exists",
    );
    assert_error(
        &post(&[("name", "../up")], Some(&photo)).await,
        400,
        "bad_avatar_name",
    );
    assert_error(
        &post(&[("name", "junk")], Some(b"not an image")).await,
        422,
        "undecodable",
    );
    assert_error(
        &post(&[("name", "nofile")], None).await,
        400,
        "invalid_upload",
    );
    assert_error(
        &post(&[("colour", "red")], Some(&photo)).await,
        400,
        "invalid_upload",
    );
    assert_error(
        &post(&[("name", "b"), ("face_box", "1,2")], Some(&photo)).await,
        400,
        "invalid_upload",
    );
    let r = call(
        &routes,
        "POST",
        "/api/v1/avatars",
        &[("content-type", "multipart/form-data; boundary=x")],
        "garbage",
    )
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
        let r = call(&routes, "POST", "/api/v1/sessions", &[], body).await;
        assert_error(&r, status, code);
    }

    let r = call(&routes, "GET", "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(r.body()).into_owned();
    assert!(text.contains("facecast_avatar_cache_hits_total"), "{text}");

    let r = call(&routes, "DELETE", "/api/v1/avatars/astro", &[], "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(&routes, "GET", "/api/v1/avatars/astro", &[], "").await;
    assert_error(&r, 404, "avatar_not_found");
    let r = call(&routes, "DELETE", "/api/v1/avatars/astro", &[], "").await;
    assert_error(&r, 404, "avatar_not_found");
}

/// Every route test's one way to send a request: `method path` with `headers` and `body`,
/// through the whole filter tree (CORS, error recovery and all), as a client would.
async fn call<F>(
    routes: &F,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl AsRef<[u8]>,
) -> Response<bytes::Bytes>
where
    F: warp::Filter + 'static,
    F::Extract: warp::Reply + Send,
{
    let mut request = warp::test::request().method(method).path(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).reply(routes).await
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
    routes: &(impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone + 'static),
) -> String {
    let r = call(routes, "POST", "/api/v1/sessions", &[], "{}").await;
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
    let post =
        async |body: &'static str| call(&routes, "POST", "/api/v1/sessions", &[], body).await;
    // By name: found in the configured models folder's piper/.
    let body = r#"{"tts": "piper", "voice": "en_US-joe-medium"}"#.to_owned();
    let r = call(&routes, "POST", "/api/v1/sessions", &[], body.clone()).await;
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.body());
    let id = json(&r)["id"].as_str().unwrap().to_owned();
    let r = call(&routes, "GET", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert_eq!(json(&r)["tts"], "piper");
    assert_eq!(json(&r)["conversation"], id.as_str());
    let r = call(
        &routes,
        "POST",
        &format!("/api/v1/sessions/{id}/say"),
        &[],
        r#"{"text": "Hello from a neural voice."}"#,
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    // An English voice cannot speak a Persian session.
    let body = body.replace(r#""tts""#, r#""lang": "fa", "tts""#);
    let r = call(&routes, "POST", "/api/v1/sessions", &[], body).await;
    assert_error(&r, 400, "voice_language_mismatch");
    let r = post(r#"{"tts": "piper", "voice": "en_US-nobody-low"}"#).await;
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

    let r = call(&routes, "GET", "/api/v1/sessions", &[], "").await;
    assert_eq!(json(&r).as_array().unwrap().len(), 1);
    let r = call(&routes, "GET", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert_eq!(json(&r)["whep_url"], format!("/whep/{id}"));
    let r = call(&routes, "GET", "/api/v1/sessions/nope", &[], "").await;
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
        let r = call(&routes, "POST", "/api/v1/sessions", &[], body).await;
        assert_error(&r, status, code);
    }
    let big = format!(r#"{{"lang": "{}"}}"#, "x".repeat(70_000));
    let r = call(&routes, "POST", "/api/v1/sessions", &[], big).await;
    assert_error(&r, 413, "body_too_large");

    // The limit: a second session fits, a third gets 503 with Retry-After.
    let second = create(&routes).await;
    let r = call(&routes, "POST", "/api/v1/sessions", &[], "{}").await;
    assert_error(&r, 503, "too_many_sessions");
    assert!(r.headers().get("retry-after").is_some());

    let r = call(
        &routes,
        "DELETE",
        &format!("/api/v1/sessions/{second}"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(
        &routes,
        "DELETE",
        &format!("/api/v1/sessions/{second}"),
        &[],
        "",
    )
    .await;
    assert_error(&r, 404, "session_not_found");

    let r = call(&routes, "GET", "/api/v1/nothing-here", &[], "").await;
    assert_error(&r, 404, "not_found");
    let r = call(&routes, "PUT", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert!(r.status().is_client_error());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn say_interrupt_and_events() {
    let routes = routes(state(Config::default()));
    let id = create(&routes).await;
    let say = async |body: String, id: String| {
        call(
            &routes,
            "POST",
            &format!("/api/v1/sessions/{id}/say"),
            &[("content-type", "application/json")],
            body,
        )
        .await
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
        let r = say(body.clone(), id.clone()).await;
        assert_error(&r, status, code);
    }
    let r = say(r#"{"text": "hi"}"#.into(), "nope".into()).await;
    assert_error(&r, 404, "session_not_found");

    let r = call(
        &routes,
        "POST",
        &format!("/api/v1/sessions/{id}/interrupt"),
        &[],
        "",
    )
    .await;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let r = call(&routes, "POST", "/api/v1/sessions/nope/interrupt", &[], "").await;
    assert_error(&r, 404, "session_not_found");
    let r = call(&routes, "GET", "/api/v1/sessions/nope/events", &[], "").await;
    assert_error(&r, 404, "session_not_found");

    // Deleting the session tells the events socket.
    call(
        &routes,
        "DELETE",
        &format!("/api/v1/sessions/{id}"),
        &[],
        "",
    )
    .await;
    let mut ended = false;
    while let Ok(Ok(m)) = tokio::time::timeout(std::time::Duration::from_secs(5), ws.recv()).await {
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
    let post = async |body: String, ct: &'static str, id: &str| {
        call(
            &routes,
            "POST",
            &format!("/whep/{id}"),
            &[("content-type", ct)],
            body,
        )
        .await
    };

    let r = post(sdp.clone(), "application/sdp", &id).await;
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

    let r = call(&routes, "GET", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert_eq!(json(&r)["viewers"], 1);

    // Trickle ICE.
    let patch = async |body: &str, ct: &'static str, path: &str| {
        call(&routes, "PATCH", path, &[("content-type", ct)], body).await
    };
    let frag = "a=mid:video0\r\na=candidate:1 1 UDP 2122252543 127.0.0.1 40000 typ host\r\n";
    let mid_frag = frag.replace(
        "video0",
        sdp.lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .unwrap()
            .trim(),
    );
    let r = patch(&mid_frag, "application/trickle-ice-sdpfrag", &location).await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT, "{:?}", r.body());
    let r = patch(&mid_frag, "application/sdp", &location).await;
    assert_error(&r, 415, "unsupported_media_type");
    let r = patch("nonsense", "application/trickle-ice-sdpfrag", &location).await;
    assert_error(&r, 400, "malformed_fragment");
    let r = patch(
        &mid_frag,
        "application/trickle-ice-sdpfrag",
        &format!("/whep/{id}/v999"),
    )
    .await;
    assert_error(&r, 404, "viewer_not_found");

    // Bad offers.
    let r = post(sdp.clone(), "text/plain", &id).await;
    assert_error(&r, 415, "unsupported_media_type");
    let r = post("this is not SDP".into(), "application/sdp", &id).await;
    assert_error(&r, 400, "malformed_sdp");
    let no_codecs = sdp
        .replace("VP8/90000", "AV1/90000")
        .replace("OPUS/48000", "PCMU/8000");
    let r = post(no_codecs, "application/sdp", &id).await;
    assert_error(&r, 406, "unsupported_offer");
    let r = post(sdp.clone(), "application/sdp", "nope").await;
    assert_error(&r, 404, "session_not_found");
    let r = post(
        "v=0\r\n".to_owned() + &"a=x\r\n".repeat(20_000),
        "application/sdp",
        &id,
    )
    .await;
    assert_error(&r, 413, "body_too_large");

    // Leaving.
    let r = call(&routes, "DELETE", &location, &[], "").await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = call(&routes, "DELETE", &location, &[], "").await;
    assert_error(&r, 404, "viewer_not_found");
    let r = call(&routes, "GET", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert_eq!(json(&r)["viewers"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_health_and_metrics() {
    let routes = routes(state(Config {
        allowed_origins: vec!["https://player.example".into()],
        ..Config::default()
    }));
    let preflight = async |origin: &str| {
        call(
            &routes,
            "OPTIONS",
            "/whep/some-session",
            &[
                ("origin", origin),
                ("access-control-request-method", "POST"),
                ("access-control-request-headers", "content-type"),
            ],
            "",
        )
        .await
    };
    let r = preflight("https://player.example").await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        r.headers()["access-control-allow-origin"],
        "https://player.example"
    );
    let r = preflight("https://evil.example").await;
    assert_error(&r, 403, "cors_forbidden");

    let r = call(&routes, "GET", "/health/live", &[], "").await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = call(&routes, "GET", "/health/ready", &[], "").await;
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.body());
    assert_eq!(json(&r)["status"], "ready");
    create(&routes).await;
    let r = call(&routes, "GET", "/metrics", &[], "").await;
    let text = std::str::from_utf8(r.body()).unwrap();
    assert!(text.contains("facecast_sessions_active 1"), "{text}");
    for name in [
        "facecast_viewers",
        "facecast_frames_produced_total",
        "facecast_say_to_first_frame_seconds",
        "facecast_wav2lip_frames_total",
        "facecast_wav2lip_frames_expired_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_gpu_that_is_not_there_makes_the_server_not_ready() {
    let mut config = Config::default();
    config.lipsync.device = facecast_onnx::Device::Cuda(0);
    let routes = routes(state(config));
    let r = call(&routes, "GET", "/health/ready", &[], "").await;
    // This machine has no GPU (with one, NVML answers and the server is ready).
    if facecast_gpu::nvml::read(0).is_ok() {
        assert_eq!(r.status(), StatusCode::OK);
        return;
    }
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        r.body()
    );
    let body = json(&r);
    assert_eq!(body["status"], "not_ready");
    assert!(
        body["gpu_error"].as_str().unwrap().contains("NVML"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_offers_are_checked_and_refused_clearly() {
    let empty = tempfile::tempdir().unwrap();
    let routes = routes(state(Config {
        // No voice activity model here: publishing must say where to get it.
        models_dir: empty.path().to_owned(),
        ..Config::default()
    }));
    let id = create(&routes).await;
    let r = call(&routes, "GET", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert_eq!(json(&r)["whip_url"], format!("/whip/{id}"));
    assert!(json(&r)["publisher"].is_null());
    let sdp = ("content-type", "application/sdp");
    let post = async |body: &str, id: &str| {
        call(
            &routes,
            "POST",
            &format!("/whip/{id}"),
            &[sdp],
            body.to_owned(),
        )
        .await
    };
    // A viewer's offer (it only receives) has nothing to publish.
    let viewer_offer = offer().await;
    assert_error(&post(&viewer_offer, &id).await, 406, "unsupported_offer");
    assert_error(&post("v=0\r\ngarbage", &id).await, 400, "malformed_sdp");
    assert_error(&post("hello", &id).await, 400, "malformed_sdp");
    let publish_offer = viewer_offer.replace("a=recvonly", "a=sendonly");
    assert_error(
        &post(&publish_offer, "nope").await,
        404,
        "session_not_found",
    );
    let r = post(&publish_offer, &id).await;
    assert_error(&r, 503, "listening_unavailable");
    assert!(
        json(&r)["message"]
            .as_str()
            .unwrap()
            .contains("pip download silero-vad"),
        "{:?}",
        r.body()
    );
    let r = call(
        &routes,
        "POST",
        &format!("/whip/{id}"),
        &[("content-type", "text/plain")],
        publish_offer.clone(),
    )
    .await;
    assert_error(&r, 415, "unsupported_media_type");
    let r = call(&routes, "DELETE", &format!("/whip/{id}/p9"), &[], "").await;
    assert_error(&r, 404, "publisher_not_found");
    let frag = ("content-type", "application/trickle-ice-sdpfrag");
    let r = call(
        &routes,
        "PATCH",
        &format!("/whip/{id}/p9"),
        &[frag],
        "a=mid:0\r\n",
    )
    .await;
    assert_error(&r, 404, "publisher_not_found");
    // The session is unharmed.
    let r = call(&routes, "GET", &format!("/api/v1/sessions/{id}"), &[], "").await;
    assert_eq!(r.status(), StatusCode::OK);
}
