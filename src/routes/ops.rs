//! What operators poll: liveness, readiness and Prometheus metrics.

use super::{with_state, State};
use crate::health::Readiness;
use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

pub fn routes(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    live().or(ready(state.clone())).or(metrics(state))
}

/// `GET /health/live` → `200` while the process serves.
fn live() -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("health" / "live")
        .and(warp::get())
        .map(|| warp::reply::json(&serde_json::json!({"status": "ok"})))
}

/// `GET /health/ready` → `200` when GStreamer and every element a session needs are usable,
/// and the configured GPU (if any) answers NVML; else `503` saying what is missing.
fn ready(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("health" / "ready")
        .and(warp::get())
        .and(with_state(state))
        .map(|state: State| {
            let readiness = Readiness::check(&state.config);
            let status = if readiness.is_ready() {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            warp::reply::with_status(warp::reply::json(&readiness), status)
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
