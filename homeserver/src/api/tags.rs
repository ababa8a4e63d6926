//! Room tags, the `m.tag` room account data one tag at a time.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::Services;

#[derive(Serialize)]
pub struct TagsResponse {
    tags: Map<String, Value>,
}

/// # `GET /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3useruseridroomsroomidtags>
pub async fn list(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, room_id)): MatrixPath<(OwnedUserId, OwnedRoomId)>,
) -> ApiResult<Json<TagsResponse>> {
    auth.must_be(&user_id)?;
    let tags = services.accounts.tags(&user_id, &room_id).await?;
    Ok(Json(TagsResponse { tags }))
}

#[derive(Deserialize)]
pub struct TagBody {
    #[serde(default, deserialize_with = "crate::service::rooms::present")]
    order: Option<f64>,
}

/// # `PUT /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3useruseridroomsroomidtagstag>
pub async fn put(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, room_id, tag)): MatrixPath<(OwnedUserId, OwnedRoomId, String)>,
    MatrixJson(body): MatrixJson<TagBody>,
) -> ApiResult<Json<EmptyResponse>> {
    auth.must_be(&user_id)?;
    services
        .accounts
        .set_tag(&user_id, &room_id, &tag, body.order)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `DELETE /_matrix/client/v3/user/{userId}/rooms/{roomId}/tags/{tag}`
/// <https://spec.matrix.org/v1.16/client-server-api/#delete_matrixclientv3useruseridroomsroomidtagstag>
pub async fn delete(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((user_id, room_id, tag)): MatrixPath<(OwnedUserId, OwnedRoomId, String)>,
) -> ApiResult<Json<EmptyResponse>> {
    auth.must_be(&user_id)?;
    services
        .accounts
        .remove_tag(&user_id, &room_id, &tag)
        .await?;
    Ok(Json(EmptyResponse {}))
}
