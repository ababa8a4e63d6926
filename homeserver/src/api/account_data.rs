//! Client account data, global and per room (e.g. `m.direct`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomId, OwnedUserId};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::presence::HIDE_PRESENCE_TYPE;
use crate::service::push_rules::PUSH_RULES_TYPE;

use crate::service::Services;

/// # `GET /_matrix/client/v3/user/{userId}/account_data/{type}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3useruseridaccount_datatype>
pub async fn get_global(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, kind)): MatrixPath<(OwnedUserId, String)>,
) -> ApiResult<Json<Value>> {
    auth.must_be(&user_id)?;
    if kind == PUSH_RULES_TYPE {
        // Also for a user who never changed the defaults, as Synapse does.
        let global = services.push_rules.get_ruleset_json(&user_id).await?;
        return Ok(Json(json!({ "global": global })));
    }
    let content = services
        .accounts
        .get_account_data(&user_id, None, &kind)
        .await?;
    content
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Account data not found"))
}

/// # `PUT /_matrix/client/v3/user/{userId}/account_data/{type}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3useruseridaccount_datatype>
pub async fn put_global(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, kind)): MatrixPath<(OwnedUserId, String)>,
    MatrixJson(content): MatrixJson<Value>,
) -> ApiResult<Json<EmptyResponse>> {
    auth.must_be(&user_id)?;
    let hide =
        (kind == HIDE_PRESENCE_TYPE).then(|| content.get("hidden") == Some(&Value::Bool(true)));
    if kind == PUSH_RULES_TYPE {
        // The ruleset is validated and cached by the push rules service.
        return Err(ApiError::new(
            ErrorKind::BadJson,
            "Cannot set m.push_rules through this API; use /pushrules",
        ));
    }
    services
        .accounts
        .set_account_data(&user_id, None, &kind, content)
        .await?;
    if let Some(hidden) = hide {
        services.presence.set_hidden(&user_id, hidden).await?;
    }
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3useruseridroomsroomidaccount_datatype>
pub async fn get_room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, room_id, kind)): MatrixPath<(OwnedUserId, OwnedRoomId, String)>,
) -> ApiResult<Json<Value>> {
    auth.must_be(&user_id)?;
    let content = services
        .accounts
        .get_account_data(&user_id, Some(&room_id), &kind)
        .await?;
    content
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "Account data not found"))
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/account_data/{type}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3useruseridroomsroomidaccount_datatype>
pub async fn put_room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, room_id, kind)): MatrixPath<(OwnedUserId, OwnedRoomId, String)>,
    MatrixJson(content): MatrixJson<Value>,
) -> ApiResult<Json<EmptyResponse>> {
    auth.must_be(&user_id)?;
    services
        .accounts
        .set_account_data(&user_id, Some(&room_id), &kind, content)
        .await?;
    Ok(Json(EmptyResponse {}))
}
