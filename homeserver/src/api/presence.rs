//! Presence: a user's status and last seen.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedUserId;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::presence::{parse_state, PresenceContent};
use crate::service::Services;

#[derive(Debug, Deserialize)]
pub struct StatusBody {
    pub presence: String,
    pub status_msg: Option<String>,
}

/// # `PUT /_matrix/client/v3/presence/{userId}/status`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3presenceuseridstatus>
pub async fn set_status(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(body): MatrixJson<StatusBody>,
) -> ApiResult<Json<EmptyResponse>> {
    if auth.who.user_id != user_id {
        return Err(ApiError::new(
            ErrorKind::Forbidden,
            "You can only set your own presence",
        ));
    }
    let state = parse_state(&body.presence)?;
    services
        .presence
        .set_status(&user_id, state, body.status_msg)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/v3/presence/{userId}/status`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3presenceuseridstatus>
pub async fn get_status(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
) -> ApiResult<Json<PresenceContent>> {
    Ok(Json(
        services
            .presence
            .get_status(&auth.who.user_id, &user_id)
            .await?,
    ))
}
