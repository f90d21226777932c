//! `/whep/…`: WHEP viewers. An offer adds a viewer to the session (201 + answer + Location),
//! `PATCH` trickles its candidates, `DELETE` ends it.

use super::{content_type, reject, with_state, State};
use crate::error::ApiError;
use crate::signalling;
use warp::http::{header, StatusCode};
use warp::{Filter, Rejection, Reply};

pub fn routes(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    offer(state.clone())
        .or(patch(state.clone()))
        .or(delete(state))
}

/// `POST /whep/{id}` (`application/sdp` offer) → `201` + SDP answer + `Location`.
fn offer(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("whep" / String)
        .and(warp::post())
        .and(content_type("application/sdp"))
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .and(with_state(state))
        .and_then(|id: String, body: bytes::Bytes, state: State| async move {
            let offer = std::str::from_utf8(&body).map_err(|_| {
                reject(ApiError::bad_request(
                    "malformed_sdp",
                    "the offer is not UTF-8 text",
                ))
            })?;
            let (viewer, answer) = state.add_viewer(&id, offer).await.map_err(reject)?;
            let location = format!("/whep/{id}/{viewer}");
            let reply = warp::reply::with_status(answer, StatusCode::CREATED);
            let reply = warp::reply::with_header(reply, header::CONTENT_TYPE, "application/sdp");
            Ok::<_, Rejection>(warp::reply::with_header(reply, header::LOCATION, location))
        })
}

/// `PATCH /whep/{id}/{viewer}` (`application/trickle-ice-sdpfrag`) → `204`.
fn patch(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("whep" / String / String)
        .and(warp::patch())
        .and(content_type("application/trickle-ice-sdpfrag"))
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .and(with_state(state))
        .and_then(
            |id: String, viewer: String, body: bytes::Bytes, state: State| async move {
                let session = state.get(&id).map_err(reject)?;
                let not_found = || {
                    reject(crate::session::SessionError::ViewerNotFound {
                        session: id.clone(),
                        viewer: viewer.clone(),
                    })
                };
                let mids = session.viewer_mids(&viewer).ok_or_else(not_found)?;
                let fragment = std::str::from_utf8(&body).map_err(|_| {
                    reject(ApiError::bad_request("malformed_fragment", "not UTF-8"))
                })?;
                let candidates = signalling::parse_trickle(fragment, &mids).map_err(|e| {
                    reject(ApiError::bad_request("malformed_fragment", e.to_string()))
                })?;
                session
                    .add_candidates(&viewer, &candidates)
                    .map_err(reject)?;
                Ok::<_, Rejection>(StatusCode::NO_CONTENT)
            },
        )
}

/// `DELETE /whep/{id}/{viewer}` → `204`: the viewer leaves.
fn delete(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("whep" / String / String)
        .and(warp::delete())
        .and(with_state(state))
        .and_then(|id: String, viewer: String, state: State| async move {
            state.remove_viewer(&id, &viewer).map_err(reject)?;
            Ok::<_, Rejection>(StatusCode::NO_CONTENT)
        })
}
