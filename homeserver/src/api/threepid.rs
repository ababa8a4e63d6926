//! Third-party identifiers (email addresses, phone numbers).
//!
//! This server sends no mail and no SMS and trusts no identity server, so no
//! third-party id can ever be validated: the routes answer what a client
//! needs to show the user a clear refusal, and an account never has one.

use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson};
use crate::service::error::ErrorKind;

#[derive(Serialize)]
pub struct ThreepidsResponse {
    threepids: [(); 0],
}

/// # `GET /_matrix/client/v3/account/3pid`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3account3pid>
pub async fn list(_auth: Auth) -> Json<ThreepidsResponse> {
    Json(ThreepidsResponse { threepids: [] })
}

/// A validation session's handle, as `add` and `bind` name it.
#[derive(Deserialize)]
pub struct SessionBody {
    #[allow(dead_code)] // Checked for presence: a body without it is malformed.
    client_secret: String,
    #[allow(dead_code)]
    sid: String,
}

/// # `POST /_matrix/client/v3/account/3pid/add`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3pidadd>
pub async fn add(_auth: Auth, MatrixJson(_body): MatrixJson<SessionBody>) -> ApiResult<()> {
    Err(ApiError::new(
        ErrorKind::ThreepidAuthFailed,
        "No validation session exists: this server validates no email addresses or phone numbers",
    ))
}

/// # `POST /_matrix/client/v3/account/3pid/bind`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3pidbind>
pub async fn bind(_auth: Auth, MatrixJson(_body): MatrixJson<SessionBody>) -> ApiResult<()> {
    Err(ApiError::new(
        ErrorKind::ServerNotTrusted,
        "This server trusts no identity server",
    ))
}

/// The third-party id `delete` and `unbind` name.
#[derive(Deserialize)]
pub struct ThreepidBody {
    #[allow(dead_code)]
    medium: String,
    #[allow(dead_code)]
    address: String,
    #[allow(dead_code)]
    #[serde(default)]
    id_server: Option<String>,
}

#[derive(Serialize)]
pub struct UnbindResponse {
    id_server_unbind_result: &'static str,
}

/// # `POST /_matrix/client/v3/account/3pid/delete` and `.../unbind`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3account3piddelete>
///
/// The account holds none, so there is nothing to remove: done, and no
/// identity server was asked.
pub async fn delete(
    _auth: Auth,
    MatrixJson(_body): MatrixJson<ThreepidBody>,
) -> Json<UnbindResponse> {
    Json(UnbindResponse {
        id_server_unbind_result: "no-support",
    })
}

/// What an email `requestToken` body must hold.
#[derive(Deserialize)]
pub struct EmailTokenBody {
    #[allow(dead_code)]
    client_secret: String,
    #[allow(dead_code)]
    email: String,
    #[allow(dead_code)]
    send_attempt: u64,
}

/// What a phone `requestToken` body must hold.
#[derive(Deserialize)]
pub struct MsisdnTokenBody {
    #[allow(dead_code)]
    client_secret: String,
    #[allow(dead_code)]
    country: String,
    #[allow(dead_code)]
    phone_number: String,
    #[allow(dead_code)]
    send_attempt: u64,
}

fn not_verified() -> ApiError {
    ApiError::new(
        ErrorKind::ThreepidDenied,
        "This server does not verify email addresses or phone numbers",
    )
}

/// # `POST .../{register,account/password,account/3pid}/email/requestToken`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3registeremailrequesttoken>
pub async fn email_token(MatrixJson(_body): MatrixJson<EmailTokenBody>) -> ApiResult<()> {
    Err(not_verified())
}

/// # `POST .../{register,account/password,account/3pid}/msisdn/requestToken`
pub async fn msisdn_token(MatrixJson(_body): MatrixJson<MsisdnTokenBody>) -> ApiResult<()> {
    Err(not_verified())
}
