//! The embeddable player: a page that only plays a session's stream (no controls), for an OBS
//! Browser Source or an `<iframe>` on a customer's site. The page (`web/embed.html`) finds
//! the session in its own URL and connects over WHEP itself.

use super::State;
use serde::Deserialize;
use warp::{Filter, Rejection, Reply};

pub fn routes(state: State) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let page = state.config.web_dir.join("embed.html");
    by_path(page.clone()).or(by_query(page))
}

/// `GET /embed/{session}[?background=#00ff00]` → the player.
fn by_path(
    page: std::path::PathBuf,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("embed" / String)
        .and(warp::get())
        .and(warp::fs::file(page))
        .map(|_session: String, file: warp::fs::File| file)
}

#[derive(Deserialize)]
struct EmbedQuery {
    embed: u8,
    #[allow(dead_code)] // read by the page; required here so a bare `?embed=1` is the client
    session: String,
}

/// `GET /?embed=1&session={session}` → the player (the web client without `embed=1`).
fn by_query(
    page: std::path::PathBuf,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path::end()
        .and(warp::get())
        .and(warp::query::<EmbedQuery>())
        .and_then(|q: EmbedQuery| async move {
            if q.embed == 1 {
                Ok(())
            } else {
                Err(warp::reject::not_found())
            }
        })
        .untuple_one()
        .and(warp::fs::file(page))
}
