//! Why a session operation failed, in the session's own terms; [`crate::error`] maps each to
//! an HTTP status and code, in one place.

use super::plan::PlanError;
use super::voice::VoiceError;
use facecast_avatars::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("no session with id '{0}'")]
    NotFound(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Voice(#[from] VoiceError),
    #[error("cannot open avatar '{name}': {source}")]
    Avatar { name: String, source: StoreError },
    #[error("the server is at its limit of {0} sessions; try again shortly")]
    Full(usize),
    #[error("cannot build the session pipeline: {0}")]
    Build(String),
    #[error("no viewer '{viewer}' in session '{session}'")]
    ViewerNotFound { session: String, viewer: String },
    #[error("session '{0}' already has a publisher: DELETE it first (one voice at a time)")]
    PublisherExists(String),
    #[error("no publisher '{publisher}' in session '{session}'")]
    PublisherNotFound { session: String, publisher: String },
    #[error("this server cannot listen: {0}")]
    ListeningUnavailable(String),
    #[error(transparent)]
    Offer(#[from] crate::signalling::SignallingError),
    #[error("{0}")]
    Negotiation(String),
    #[error("no output '{output}' in session '{session}'")]
    OutputNotFound { session: String, output: String },
    #[error("cannot start the output: {0}")]
    Output(String),
    #[error(transparent)]
    Busy(#[from] super::admission::Refusal),
}
