//! API errors: one type for every route, answered as JSON `{code, message}` with its status.

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
