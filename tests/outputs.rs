//! Outputs through the server's HTTP API, as a process: a recording still plays after the
//! server is killed mid-recording, recordings download with HTTP Range, bad output requests get
//! clear errors, and a stream key never reaches the log, the API answers or the metrics.

mod common;

use gst::prelude::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

/// Polls `check` every 100 ms until it gives a value; fails after `limit` saying `what`.
async fn until<T, F: std::future::Future<Output = Option<T>>>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> F,
) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn json_of(r: reqwest::Response) -> Value {
    r.json().await.expect("a JSON answer")
}

async fn create(client: &reqwest::Client, base: &str, body: Value) -> String {
    let r = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    json_of(r).await["id"].as_str().unwrap().to_owned()
}

/// The number of top-level `moof` boxes (fragments) in an MP4 file as far as it is written.
fn fragments(path: &Path) -> usize {
    let data = std::fs::read(path).unwrap_or_default();
    let (mut at, mut n) = (0usize, 0);
    while at + 8 <= data.len() {
        let size = u32::from_be_bytes(data[at..at + 4].try_into().unwrap()) as usize;
        if &data[at + 4..at + 8] == b"moof" {
            n += 1;
        }
        if size < 8 {
            break;
        }
        at += size;
    }
    n
}

/// Decodes an MP4 to its end (fails on any error): its video frames and seconds of sound.
fn decode(path: &Path) -> (usize, f64) {
    common::init();
    let pipeline = gst::parse::launch(&format!(
        "filesrc location={} ! qtdemux name=d \
         d.video_0 ! queue ! h264parse ! avdec_h264 ! appsink name=v sync=false \
         d.audio_0 ! queue ! aacparse ! avdec_aac ! audioconvert ! audio/x-raw,format=S16LE,channels=1 ! appsink name=a sync=false",
        path.display()
    ))
    .unwrap()
    .downcast::<gst::Pipeline>()
    .unwrap();
    let frames = common::collect_buffers(&pipeline, "v");
    let sound = common::collect_buffers(&pipeline, "a");
    common::run_to_eos(&pipeline, 60);
    let frames = frames.lock().unwrap().len();
    let rate = 48_000.0;
    let samples: usize = sound.lock().unwrap().iter().map(|b| b.size() / 2).sum();
    (frames, samples as f64 / rate)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_survives_the_server_being_killed_and_downloads_with_range() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, base, _log) =
        common::serve(&[("FACECAST_DATA_DIR", data.path().to_str().unwrap())]);
    let client = reqwest::Client::new();
    let id = create(&client, &base, json!({"record": true})).await;
    client
        .post(format!("{base}/api/v1/sessions/{id}/say"))
        .json(&json!({"text": "This is being recorded. One, two, three, four, five."}))
        .send()
        .await
        .unwrap();
    let name: String = until(Duration::from_secs(10), "the recording", || {
        let (client, url) = (client.clone(), format!("{base}/api/v1/recordings"));
        async move {
            let list = json_of(client.get(url).send().await.ok()?).await;
            list["recordings"][0]["name"].as_str().map(String::from)
        }
    })
    .await;
    let file = data.path().join("recordings").join(&name);
    // About five seconds of both streams (a fragment per stream per second).
    until(Duration::from_secs(20), "ten fragments", || {
        let file = file.clone();
        async move { (fragments(&file) >= 10).then_some(()) }
    })
    .await;

    // Downloads: a range, and names that would leave the folder.
    let r = client
        .get(format!("{base}/api/v1/recordings/{name}"))
        .header("range", "bytes=0-7")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 206);
    let range = r.headers()["content-range"].to_str().unwrap().to_owned();
    assert!(range.starts_with("bytes 0-7/"), "{range}");
    let head = r.bytes().await.unwrap();
    assert_eq!(&head[4..8], b"ftyp");
    for bad in ["..%2F..%2Fetc%2Fpasswd", "a..b.mp4", "notes.txt"] {
        let r = client
            .get(format!("{base}/api/v1/recordings/{bad}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert_eq!(json_of(r).await["code"], "bad_recording_name");
    }
    let r = client
        .get(format!("{base}/api/v1/recordings/nothing-here.mp4"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // As a crash would: no chance to close the file.
    server.crash();
    let (frames, sound) = tokio::task::spawn_blocking(move || decode(&file))
        .await
        .unwrap();
    println!("{frames} frames, {sound:.2} s of sound after SIGKILL");
    // At most the fragment being written is lost.
    assert!(frames >= 75, "only {frames} frames survived");
    assert!(sound >= 3.0, "only {sound:.2} s of sound survived");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_requests_are_checked_and_the_key_never_shows() {
    let data = tempfile::tempdir().unwrap();
    let (server, base, log) = common::serve(&[
        ("FACECAST_DATA_DIR", data.path().to_str().unwrap()),
        ("FACECAST_LOG", "debug"),
        ("FACECAST_MAX_OUTPUTS_PER_SESSION", "2"),
    ]);
    let client = reqwest::Client::new();
    // A bad URL at creation fails the creation.
    let r = client
        .post(format!("{base}/api/v1/sessions"))
        .json(&json!({"outputs": ["ftp://example.com/live/key"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(json_of(r).await["code"], "invalid_output_url");

    let id = create(&client, &base, json!({})).await;
    let outputs = format!("{base}/api/v1/sessions/{id}/outputs");
    for (body, code) in [
        (
            json!({"url": "http://example.com/live/key"}),
            "invalid_output_url",
        ),
        (
            json!({"url": "rtmp://example.com/onlyapp"}),
            "invalid_output_url",
        ),
        (json!({"url": "srt://example.com"}), "invalid_output_url"),
        (json!({"url": "not a url"}), "invalid_output_url"),
        (json!({}), "invalid_output"),
    ] {
        let r = client.post(&outputs).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        assert_eq!(json_of(r).await["code"], code, "{body}");
    }

    // Nothing listens on port 1 (and no test's server can take it): refused, it retries.
    let port = 1;
    let key = "live_8d1c0f2b9e_secret";
    let r = client
        .post(&outputs)
        .json(&json!({"url": format!("rtmp://127.0.0.1:{port}/app/{key}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let location = r.headers()["location"].to_str().unwrap().to_owned();
    let created = json_of(r).await;
    assert_eq!(
        location,
        format!(
            "/api/v1/sessions/{id}/outputs/{}",
            created["id"].as_str().unwrap()
        )
    );
    assert_eq!(created["url"], format!("rtmp://127.0.0.1:{port}/app/***"));
    let listed: Value = until(Duration::from_secs(10), "a reconnection", || {
        let (client, url) = (client.clone(), outputs.clone());
        async move {
            let list = json_of(client.get(url).send().await.ok()?).await;
            (list["outputs"][0]["reconnects"].as_u64()? >= 1).then_some(list)
        }
    })
    .await;
    assert_eq!(listed["outputs"][0]["state"], "reconnecting");
    assert!(
        listed["outputs"][0]["error"]
            .as_str()
            .unwrap()
            .contains("refused"),
        "{listed}"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("facecast_output_reconnects_total{kind=\"rtmp\",output=\"o1\""));
    let session = client
        .get(format!("{base}/api/v1/sessions/{id}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // The limit, then stopping.
    let r = client
        .post(&outputs)
        .json(&json!({"record": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = client
        .post(&outputs)
        .json(&json!({"record": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    assert_eq!(json_of(r).await["code"], "too_many_outputs");
    let r = client.delete(format!("{outputs}/o9")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client.delete(format!("{outputs}/o1")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let list = json_of(client.get(&outputs).send().await.unwrap()).await;
    let ids: Vec<&str> = list["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o2"]);

    drop(server);
    let log = log.lock().unwrap().clone();
    assert!(log.contains("output failed"), "the failure is logged");
    for (what, text) in [
        ("log", &log),
        ("metrics", &metrics),
        ("session", &session),
        ("outputs", &listed.to_string()),
    ] {
        assert!(!text.contains(key), "the key shows in the {what}");
    }
}
