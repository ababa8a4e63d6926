//! The API layer's error: maps a service error kind to an HTTP status and the
//! Matrix JSON body. Internal causes were logged below; clients get no detail.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::service::error::{ErrorKind, ServiceError};

#[derive(Debug)]
pub struct ApiError(pub ServiceError);

pub type ApiResult<T> = Result<T, ApiError>;

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        ApiError(err)
    }
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ApiError(ServiceError::new(kind, message))
    }

    pub fn status(&self) -> StatusCode {
        status_of(&self.0.kind)
    }
}

fn status_of(kind: &ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::WrongRoomKeysVersion { .. }
        | ErrorKind::Forbidden
        | ErrorKind::ThreepidDenied
        | ErrorKind::UserDeactivated
        | ErrorKind::GuestAccessForbidden => StatusCode::FORBIDDEN,
        ErrorKind::MissingToken
        | ErrorKind::UnknownToken
        | ErrorKind::UiaRequired(_)
        | ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorKind::NotFound | ErrorKind::Unrecognized => StatusCode::NOT_FOUND,
        ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorKind::LimitExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
        ErrorKind::CannotOverwriteMedia => StatusCode::CONFLICT,
        ErrorKind::NotYetUploaded => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
        ErrorKind::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let ServiceError { kind, message } = self.0;
        let status = status_of(&kind);
        let body = match kind {
            ErrorKind::UiaRequired(body) => body,
            ErrorKind::LimitExceeded { retry_after_ms } => json!({
                "errcode": kind.errcode(), "error": message, "retry_after_ms": retry_after_ms
            }),
            ErrorKind::WrongRoomKeysVersion {
                ref current_version,
            } => json!({
                "errcode": kind.errcode(), "error": message, "current_version": current_version
            }),
            ErrorKind::IncompatibleRoomVersion { ref room_version } => json!({
                "errcode": kind.errcode(), "error": message, "room_version": room_version
            }),
            _ => json!({"errcode": kind.errcode(), "error": message}),
        };
        (status, Json(body)).into_response()
    }
}
