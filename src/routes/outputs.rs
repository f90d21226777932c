//! `/api/v1/sessions/{id}/outputs…` (restreams and recordings of a session) and
//! `/api/v1/recordings…` (the recorded files, downloadable with HTTP Range).

use super::{json_body, reject, with_state, State};
use crate::error::ApiError;
use crate::recordings;
use crate::session::plan::OutputRequest;
use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

pub fn routes(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    add(state.clone())
        .or(list(state.clone()))
        .or(delete(state.clone()))
        .or(recordings(state.clone()))
        .or(download(state))
}

/// `POST /api/v1/sessions/{id}/outputs` `{"url": "rtmp://…" | "srt://…"}` or `{"record": true}`
/// → `201 {id, kind, url (redacted), recording?, state, …}`; `409` past
/// `max_outputs_per_session`.
fn add(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("api" / "v1" / "sessions" / String / "outputs")
        .and(warp::post())
        .and(json_body::<OutputRequest>(limit))
        .and(with_state(state))
        .and_then(|id: String, req: OutputRequest, state: State| async move {
            let info = state.add_output(&id, &req).await.map_err(reject)?;
            let location = format!("/api/v1/sessions/{id}/outputs/{}", info.id);
            Ok::<_, Rejection>(warp::reply::with_header(
                warp::reply::with_status(warp::reply::json(&info), StatusCode::CREATED),
                header::LOCATION,
                location,
            ))
        })
}

/// `GET /api/v1/sessions/{id}/outputs` → `200 {"outputs": [...]}` with each one's state.
fn list(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String / "outputs")
        .and(warp::get())
        .and(with_state(state))
        .and_then(|id: String, state: State| async move {
            let session = state.get(&id).map_err(reject)?;
            Ok::<_, Rejection>(warp::reply::json(
                &serde_json::json!({ "outputs": session.outputs() }),
            ))
        })
}

/// `DELETE /api/v1/sessions/{id}/outputs/{output}` → `204`: stopped (a recording closed).
fn delete(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "sessions" / String / "outputs" / String)
        .and(warp::delete())
        .and(with_state(state))
        .and_then(|id: String, output: String, state: State| async move {
            // Closing a recording waits for its muxer: off the runtime.
            tokio::task::spawn_blocking(move || state.remove_output(&id, &output))
                .await
                .map_err(|e| reject(ApiError::internal(format!("stopping failed: {e}"))))?
                .map_err(reject)?;
            Ok::<_, Rejection>(StatusCode::NO_CONTENT)
        })
}

/// `GET /api/v1/recordings` → `200 {"recordings": [{name, bytes, modified_secs, url}…]}`.
fn recordings(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "recordings")
        .and(warp::get())
        .and(with_state(state))
        .and_then(|state: State| async move {
            let dir = state.config.recordings_dir();
            let list = tokio::task::spawn_blocking(move || recordings::list(&dir))
                .await
                .map_err(|e| reject(ApiError::internal(e.to_string())))?
                .map_err(|e| {
                    reject(ApiError::internal(format!(
                        "cannot read the recordings folder: {e}"
                    )))
                })?;
            Ok::<_, Rejection>(warp::reply::json(
                &serde_json::json!({ "recordings": list }),
            ))
        })
}

/// `GET /api/v1/recordings/{name}` → the MP4 (`Range` gives `206`); `400` for a name with
/// `/` or `..`, `404` for none.
fn download(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("api" / "v1" / "recordings" / ..)
        .and(warp::get())
        .and(warp::path::peek())
        .and_then(|name: warp::path::Peek| async move {
            recordings::check_name(name.as_str()).map_err(reject)
        })
        .untuple_one()
        .and(warp::fs::dir(state.config.recordings_dir()))
}
