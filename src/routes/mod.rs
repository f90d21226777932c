//! HTTP routes (warp): the REST API, WHEP, the events WebSocket, health, metrics and the web
//! client. One filter function per route, handlers as plain async functions, every error
//! answered by [`crate::error::recover`] as JSON `{code, message}`.
//!
//! - [`sessions`]: `/api/v1/sessions…`: create, list, describe, end, say, interrupt, chat, events.
//! - [`whep`]: `/whep/…`: viewers' offers, trickled candidates, leaving.
//! - [`whip`]: `/whip/…`: a publisher's voice in: offer, trickled candidates, stopping.
//! - [`avatars`]: `/api/v1/avatars…`: registration and the store.
//! - [`ops`]: health probes and Prometheus metrics.
//! - [`embed`]: `/embed/{session}` (and `/?embed=1&session=…`): the embeddable player page.
//! - [`outputs`]: `/api/v1/sessions/{id}/outputs…` (restreams, recordings) and
//!   `/api/v1/recordings…` (the recorded files).

use crate::error::{recover, ApiError};
use crate::session::Registry;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

mod avatars;
mod embed;
mod ops;
mod outputs;
mod sessions;
mod whep;
mod whip;

pub(crate) type State = Arc<Registry>;

pub(crate) fn with_state(
    state: State,
) -> impl Filter<Extract = (State,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// Any domain error as a rejection carrying its JSON answer.
pub(crate) fn reject(e: impl Into<ApiError>) -> Rejection {
    warp::reject::custom(e.into())
}

/// JSON body, at most `limit` bytes.
fn json_body<T: serde::de::DeserializeOwned + Send>(
    limit: u64,
) -> impl Filter<Extract = (T,), Error = Rejection> + Clone {
    warp::body::content_length_limit(limit).and(warp::body::json())
}

/// Every route, with CORS and JSON errors.
pub fn routes(
    state: State,
) -> impl Filter<Extract = (impl Reply,), Error = std::convert::Infallible> + Clone {
    let cors = cors(&state.config.allowed_origins);
    let api = sessions::routes(state.clone())
        .or(whep::routes(state.clone()))
        .or(whip::routes(state.clone()))
        .or(avatars::routes(state.clone()))
        .or(ops::routes(state.clone()))
        .or(outputs::routes(state.clone()))
        // Errors get CORS headers too, or a page on another origin cannot read them.
        .recover(recover)
        .with(cors);
    let embed = embed::routes(state.clone());
    let web = warp::get().and(warp::fs::dir(state.config.web_dir.clone()));
    embed.or(web).or(api).recover(recover)
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

/// Requires the request's Content-Type to be `expected` (415 otherwise).
fn content_type(expected: &'static str) -> impl Filter<Extract = (), Error = Rejection> + Clone {
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

#[cfg(test)]
mod tests;
