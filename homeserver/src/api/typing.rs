//! Typing notifications.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomId, OwnedUserId};
use serde::Deserialize;

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::Services;

#[derive(Debug, Deserialize)]
pub struct TypingBody {
    pub typing: bool,
    pub timeout: Option<u64>,
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/typing/{userId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3roomsroomidtypinguserid>
pub async fn set_typing(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, user_id)): MatrixPath<(OwnedRoomId, OwnedUserId)>,
    MatrixJson(body): MatrixJson<TypingBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .typing
        .set(
            &services.rooms,
            &auth.who,
            &room_id,
            &user_id,
            body.typing,
            body.timeout,
        )
        .await?;
    if body.typing {
        services.presence.activity(&auth.who.user_id).await;
    }
    Ok(Json(EmptyResponse {}))
}
