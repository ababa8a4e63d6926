//! The service layer's error: a Matrix error kind plus a message for the client.
//! Internal causes are logged where they happen and never reach clients.

use serde_json::Value;

use crate::store::StoreError;

/// Matrix error codes the server emits (spec: "Standard error response").
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    Forbidden,
    MissingToken,
    UnknownToken,
    NotFound,
    NotJson,
    BadJson,
    UserInUse,
    InvalidUsername,
    InvalidParam,
    MissingParam,
    TooLarge,
    LimitExceeded {
        retry_after_ms: u64,
    },
    Unrecognized,
    GuestAccessForbidden,
    RoomInUse,
    InvalidRoomState,
    UnsupportedRoomVersion,
    /// The joining server does not support the room's version.
    IncompatibleRoomVersion {
        room_version: String,
    },
    /// A reserved media id was already uploaded to.
    CannotOverwriteMedia,
    /// Reserved media whose upload has not arrived yet.
    NotYetUploaded,
    /// User-interactive authentication must continue: the body lists the flows.
    UiaRequired(Value),
    /// Keys were sent to a backup version that is not the current one.
    WrongRoomKeysVersion {
        current_version: String,
    },
    /// A request from another server without a valid X-Matrix signature.
    Unauthorized,
    /// This server verifies no email addresses or phone numbers.
    ThreepidDenied,
    /// No validated third-party id session exists.
    ThreepidAuthFailed,
    /// This server trusts no identity server.
    ServerNotTrusted,
    /// The account was deactivated.
    UserDeactivated,
    /// A profile field name is too long.
    KeyTooLarge,
    /// A profile would outgrow its limit.
    ProfileTooLarge,
    /// Another server, needed for the answer, failed to give one.
    BadGateway,
    /// An internal failure; the message stays in the logs.
    Unknown,
}

impl ErrorKind {
    pub fn errcode(&self) -> &'static str {
        match self {
            ErrorKind::Forbidden => "M_FORBIDDEN",
            ErrorKind::MissingToken => "M_MISSING_TOKEN",
            ErrorKind::UnknownToken => "M_UNKNOWN_TOKEN",
            ErrorKind::NotFound => "M_NOT_FOUND",
            ErrorKind::NotJson => "M_NOT_JSON",
            ErrorKind::BadJson => "M_BAD_JSON",
            ErrorKind::UserInUse => "M_USER_IN_USE",
            ErrorKind::InvalidUsername => "M_INVALID_USERNAME",
            ErrorKind::InvalidParam => "M_INVALID_PARAM",
            ErrorKind::MissingParam => "M_MISSING_PARAM",
            ErrorKind::TooLarge => "M_TOO_LARGE",
            ErrorKind::LimitExceeded { .. } => "M_LIMIT_EXCEEDED",
            ErrorKind::Unrecognized => "M_UNRECOGNIZED",
            ErrorKind::GuestAccessForbidden => "M_GUEST_ACCESS_FORBIDDEN",
            ErrorKind::RoomInUse => "M_ROOM_IN_USE",
            ErrorKind::InvalidRoomState => "M_INVALID_ROOM_STATE",
            ErrorKind::UnsupportedRoomVersion => "M_UNSUPPORTED_ROOM_VERSION",
            ErrorKind::IncompatibleRoomVersion { .. } => "M_INCOMPATIBLE_ROOM_VERSION",
            ErrorKind::CannotOverwriteMedia => "M_CANNOT_OVERWRITE_MEDIA",
            ErrorKind::NotYetUploaded => "M_NOT_YET_UPLOADED",
            ErrorKind::UiaRequired(_) => "M_FORBIDDEN",
            ErrorKind::WrongRoomKeysVersion { .. } => "M_WRONG_ROOM_KEYS_VERSION",
            ErrorKind::Unauthorized => "M_UNAUTHORIZED",
            ErrorKind::ThreepidDenied => "M_THREEPID_DENIED",
            ErrorKind::ThreepidAuthFailed => "M_THREEPID_AUTH_FAILED",
            ErrorKind::ServerNotTrusted => "M_SERVER_NOT_TRUSTED",
            ErrorKind::UserDeactivated => "M_USER_DEACTIVATED",
            ErrorKind::KeyTooLarge => "M_KEY_TOO_LARGE",
            ErrorKind::ProfileTooLarge => "M_PROFILE_TOO_LARGE",
            ErrorKind::BadGateway | ErrorKind::Unknown => "M_UNKNOWN",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ServiceError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type ServiceResult<T> = Result<T, ServiceError>;

impl ServiceError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParam, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadJson, message)
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(ErrorKind::Unknown, "Internal server error")
    }
}

impl From<StoreError> for ServiceError {
    fn from(err: StoreError) -> Self {
        match err {
            // The engine refused the client's value (a NUL in text on
            // PostgreSQL): a bad request, not a server fault.
            StoreError::Invalid(reason) => {
                tracing::debug!(%reason, "refused a value the store cannot hold");
                ServiceError::invalid_param("The request holds a value the server cannot store")
            }
            err => ServiceError::internal(crate::store::chain(&err)),
        }
    }
}
