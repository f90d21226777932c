//! API errors: one type for every route, answered as JSON `{code, message}` with its status.
//!
//! The domain modules (sessions, conversations, avatars) return their own error enums and know
//! nothing of HTTP; this is the one place each of their errors gets a status and a code.

use crate::conversation::chat::ChatError;
use crate::session::plan::PlanError;
use crate::session::voice::VoiceError;
use crate::session::SessionError;
use crate::signalling::SignallingError;
use facecast_avatars::registration::RegisterError;
use facecast_avatars::store::StoreError;
use serde::Serialize;
use warp::http::StatusCode;

#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `session_not_found`.
    pub code: &'static str,
    pub message: String,
    /// Seconds to wait before retrying (503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn session_not_found(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "session_not_found",
            format!("no session with id '{id}'"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl warp::reject::Reject for ApiError {}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unknown(name) => ApiError::new(
                StatusCode::NOT_FOUND,
                "avatar_not_found",
                format!("no avatar '{name}' is registered (GET /api/v1/avatars lists them; 'default' is the built-in face)"),
            ),
            StoreError::BadName { .. } => ApiError::bad_request("bad_avatar_name", e.to_string()),
            StoreError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "avatar_exists", e.to_string())
            }
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        match e {
            RegisterError::Store(e) => e.into(),
            RegisterError::Exists(_) => {
                ApiError::new(StatusCode::CONFLICT, "avatar_exists", e.to_string())
            }
            RegisterError::NoFace(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "no_face", e.to_string())
            }
            RegisterError::BadBox { .. } => ApiError::bad_request("bad_face_box", e.to_string()),
            RegisterError::Decode(_) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "undecodable",
                e.to_string(),
            ),
            other => ApiError::internal(other.to_string()),
        }
    }
}

impl From<PlanError> for ApiError {
    fn from(e: PlanError) -> Self {
        let code = match e {
            PlanError::UnknownEngine(_) => "unknown_engine",
            PlanError::NoLipsyncModel => {
                return ApiError::new(StatusCode::CONFLICT, "no_lipsync_model", e.to_string())
            }
            PlanError::EngineMismatch => "engine_mismatch",
            PlanError::UnknownTts(_) => "unknown_tts",
            PlanError::PersonaTooLong(_) => {
                return ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "persona_too_long",
                    e.to_string(),
                )
            }
            PlanError::BadConversation => "bad_conversation",
            PlanError::UnknownListen(_) => "unknown_listen",
            PlanError::Output(_) => "invalid_output_url",
            PlanError::OutputRequest => "invalid_output",
            PlanError::TooManyOutputs(_) => {
                return ApiError::new(StatusCode::CONFLICT, "too_many_outputs", e.to_string())
            }
        };
        ApiError::bad_request(code, e.to_string())
    }
}

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(id) => ApiError::session_not_found(&id),
            SessionError::Plan(e) => e.into(),
            SessionError::Voice(e @ VoiceError::Unknown(_)) => {
                ApiError::bad_request("unknown_voice", e.to_string())
            }
            SessionError::Voice(e @ VoiceError::LanguageMismatch { .. }) => {
                ApiError::bad_request("voice_language_mismatch", e.to_string())
            }
            SessionError::Avatar { name, source } => match source {
                StoreError::Unknown(_) | StoreError::BadName { .. } => source.into(),
                other => ApiError::internal(format!("cannot open avatar '{name}': {other}")),
            },
            SessionError::Full(_) => {
                let mut api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too_many_sessions",
                    e.to_string(),
                );
                api.retry_after = Some(10);
                api
            }
            SessionError::Build(_) => ApiError::internal(e.to_string()),
            SessionError::ViewerNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "viewer_not_found", e.to_string())
            }
            SessionError::Offer(SignallingError::NothingToSend(_)) => ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "unsupported_offer",
                e.to_string(),
            ),
            SessionError::Offer(SignallingError::NothingToReceive) => ApiError::new(
                StatusCode::NOT_ACCEPTABLE,
                "unsupported_offer",
                e.to_string(),
            ),
            SessionError::PublisherExists(_) => {
                ApiError::new(StatusCode::CONFLICT, "publisher_exists", e.to_string())
            }
            SessionError::ListeningUnavailable(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "listening_unavailable",
                e.to_string(),
            ),
            SessionError::PublisherNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "publisher_not_found", e.to_string())
            }
            SessionError::Offer(SignallingError::MalformedFragment(_)) => {
                ApiError::bad_request("malformed_fragment", e.to_string())
            }
            SessionError::Offer(SignallingError::Malformed(_)) => {
                ApiError::bad_request("malformed_sdp", e.to_string())
            }
            SessionError::Negotiation(_) => {
                ApiError::bad_request("negotiation_failed", e.to_string())
            }
            SessionError::OutputNotFound { .. } => {
                ApiError::new(StatusCode::NOT_FOUND, "output_not_found", e.to_string())
            }
            SessionError::Output(_) => ApiError::internal(e.to_string()),
            SessionError::Busy(refusal) => {
                let mut api = ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    refusal.code(),
                    refusal.to_string(),
                );
                api.retry_after = Some(crate::session::admission::BUSY_WINDOW.as_secs());
                api
            }
        }
    }
}

impl From<crate::recordings::RecordingError> for ApiError {
    fn from(e: crate::recordings::RecordingError) -> Self {
        ApiError::bad_request("bad_recording_name", e.to_string())
    }
}

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        match e {
            ChatError::NoModel => ApiError::new(StatusCode::CONFLICT, "no_llm", e.to_string()),
            ChatError::QuestionTooLong(_) => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "question_too_long",
                e.to_string(),
            ),
        }
    }
}

/// A pipeline error as a person can act on it: the element, its message, and the element's
/// own details when it gave any beyond GStreamer's source location.
pub fn describe_bus_error(msg: &gst::message::Error) -> String {
    use gst::prelude::*;
    let source = msg
        .src()
        .map(|s| s.name().to_string())
        .unwrap_or_else(|| "pipeline".into());
    let mut text = format!("{source}: {}", msg.error());
    if let Some(debug) = msg.debug() {
        // GStreamer writes "file.c(line): function (): /Gst…/element:" and, on the next line,
        // what the element added. Without a next line there is only the location.
        let detail = debug.split_once('\n').map_or("", |(_, d)| d).trim();
        if !detail.is_empty() && !text.contains(detail) {
            text.push_str(&format!(" ({detail})"));
        }
    }
    text
}

#[derive(Serialize)]
struct Body<'a> {
    code: &'a str,
    message: &'a str,
}

impl warp::Reply for ApiError {
    fn into_response(self) -> warp::reply::Response {
        let body = warp::reply::json(&Body {
            code: self.code,
            message: &self.message,
        });
        let mut response = warp::reply::with_status(body, self.status).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().unwrap());
        }
        response
    }
}

/// Turns every rejection (ours and warp's) into a JSON error.
pub async fn recover(rejection: warp::Rejection) -> Result<ApiError, std::convert::Infallible> {
    use warp::reject;
    if let Some(e) = rejection.find::<ApiError>() {
        return Ok(e.clone());
    }
    // A refused CORS preflight comes combined with other routes' method mismatches: it wins.
    let e = if let Some(e) = rejection.find::<warp::filters::cors::CorsForbidden>() {
        ApiError::new(StatusCode::FORBIDDEN, "cors_forbidden", e.to_string())
    } else if rejection.is_not_found() {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such resource")
    } else if let Some(e) = rejection.find::<reject::PayloadTooLarge>() {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            e.to_string(),
        )
    } else if let Some(e) = rejection.find::<warp::filters::body::BodyDeserializeError>() {
        ApiError::bad_request("invalid_json", format!("invalid JSON body: {e}"))
    } else if let Some(e) = rejection.find::<reject::UnsupportedMediaType>() {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            e.to_string(),
        )
    } else if let Some(e) = rejection.find::<reject::InvalidHeader>() {
        ApiError::bad_request("invalid_header", e.to_string())
    } else if let Some(e) = rejection.find::<reject::MissingHeader>() {
        ApiError::bad_request("missing_header", e.to_string())
    } else if rejection.find::<reject::MethodNotAllowed>().is_some() {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "method not allowed here",
        )
    } else if let Some(e) = rejection.find::<reject::LengthRequired>() {
        ApiError::new(
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            e.to_string(),
        )
    } else {
        tracing::warn!("unhandled rejection: {rejection:?}");
        ApiError::internal("unexpected error")
    };
    Ok(e)
}
