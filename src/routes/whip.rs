//! `/whip/…`: WHIP publishers (OBS 30+, GStreamer's WHIP sink, the web client's microphone).
//! An offer adds the session's one publisher (201 + answer + Location), `PATCH` trickles its
//! candidates, `DELETE` ends it.

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

/// `POST /whip/{id}` (`application/sdp` offer) → `201` + SDP answer + `Location`.
fn offer(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("whip" / String)
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
            let (publisher, answer) = state.add_publisher(&id, offer).await.map_err(reject)?;
            let location = format!("/whip/{id}/{publisher}");
            let reply = warp::reply::with_status(answer, StatusCode::CREATED);
            let reply = warp::reply::with_header(reply, header::CONTENT_TYPE, "application/sdp");
            Ok::<_, Rejection>(warp::reply::with_header(reply, header::LOCATION, location))
        })
}

/// `PATCH /whip/{id}/{publisher}` (`application/trickle-ice-sdpfrag`) → `204`.
fn patch(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let limit = state.config.max_body_bytes;
    warp::path!("whip" / String / String)
        .and(warp::patch())
        .and(content_type("application/trickle-ice-sdpfrag"))
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .and(with_state(state))
        .and_then(
            |id: String, publisher: String, body: bytes::Bytes, state: State| async move {
                let session = state.get(&id).map_err(reject)?;
                let mids = session.publisher_mids(&publisher).ok_or_else(|| {
                    reject(crate::session::SessionError::PublisherNotFound {
                        session: id.clone(),
                        publisher: publisher.clone(),
                    })
                })?;
                let fragment = std::str::from_utf8(&body).map_err(|_| {
                    reject(ApiError::bad_request("malformed_fragment", "not UTF-8"))
                })?;
                let candidates = signalling::parse_trickle(fragment, &mids).map_err(|e| {
                    reject(ApiError::bad_request("malformed_fragment", e.to_string()))
                })?;
                session
                    .add_publisher_candidates(&publisher, &candidates)
                    .map_err(reject)?;
                Ok::<_, Rejection>(StatusCode::NO_CONTENT)
            },
        )
}

/// `DELETE /whip/{id}/{publisher}` → `204`: the publisher stops.
fn delete(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("whip" / String / String)
        .and(warp::delete())
        .and(with_state(state))
        .and_then(|id: String, publisher: String, state: State| async move {
            state.remove_publisher(&id, &publisher).map_err(reject)?;
            Ok::<_, Rejection>(StatusCode::NO_CONTENT)
        })
}
