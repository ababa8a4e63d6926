//! Account deactivation.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson};
use crate::service::accounts::uia::AuthData;
use crate::service::Services;

#[derive(Deserialize)]
pub struct DeactivateRequest {
    auth: Option<AuthData>,
    /// Accepted; this server keeps no erasure list yet, so events stay as
    /// they were sent (the closing note of issue 20 says so).
    #[serde(default)]
    #[allow(dead_code)]
    erase: bool,
    #[allow(dead_code)]
    id_server: Option<String>,
}

#[derive(Serialize)]
pub struct DeactivateResponse {
    /// No identity server holds a binding of ours.
    id_server_unbind_result: &'static str,
}

/// # `POST /_matrix/client/v3/account/deactivate`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3accountdeactivate>
///
/// After the password is given again: the user leaves every room, their
/// pushers, devices, keys and tokens go, their profile is cleared, and the
/// name stays taken.
pub async fn deactivate(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<DeactivateRequest>,
) -> ApiResult<Json<DeactivateResponse>> {
    let who = &auth.who;
    services
        .accounts
        .interactive_auth(who, "deactivate", body.auth.as_ref())
        .await?;
    services.rooms.part_all(who).await?;
    services
        .pushers
        .remove_for_logout(&who.user_id, None, None)
        .await?;
    services.accounts.deactivate(&who.user_id).await?;
    Ok(Json(DeactivateResponse {
        id_server_unbind_result: "no-support",
    }))
}
