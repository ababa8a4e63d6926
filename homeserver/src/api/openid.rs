//! OpenID tokens: a user proves who they are to a third party (an
//! integration manager, a widget) without giving it their access token.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedServerName, OwnedUserId};
use serde::Serialize;
use serde_json::{Map, Value};

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixPath};
use crate::service::accounts::OPENID_TOKEN_LIFETIME_MS;
use crate::service::Services;

#[derive(Serialize)]
pub struct OpenIdToken {
    access_token: String,
    token_type: &'static str,
    matrix_server_name: OwnedServerName,
    expires_in: i64,
}

/// # `POST /_matrix/client/v3/user/{userId}/openid/request_token`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3useruseridopenidrequest_token>
///
/// The third party checks the token with this server's
/// `GET /_matrix/federation/v1/openid/userinfo`.
pub async fn request_token(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    // An object (its fields are for future use); anything else is refused.
    MatrixJson(_body): MatrixJson<Map<String, Value>>,
) -> ApiResult<Json<OpenIdToken>> {
    auth.must_be(&user_id)?;
    let access_token = services.accounts.request_openid_token(&user_id).await?;
    Ok(Json(OpenIdToken {
        access_token,
        token_type: "Bearer",
        matrix_server_name: services.config.server_name.clone(),
        expires_in: OPENID_TOKEN_LIFETIME_MS / 1000,
    }))
}
