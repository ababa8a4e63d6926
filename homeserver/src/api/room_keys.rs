//! Server-side key backups: `/room_keys/version` and `/room_keys/keys`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedRoomId;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath, MatrixQuery};
use super::EmptyResponse;
use crate::service::e2ee::{by_room, BackupVersionInfo};
use crate::service::error::ErrorKind;
use crate::service::Services;
use crate::store::e2ee::BackupKey;

#[derive(Deserialize)]
pub struct CreateRequest {
    pub algorithm: String,
    pub auth_data: Value,
}

#[derive(Serialize)]
pub struct CreateResponse {
    pub version: String,
}

/// # `POST /_matrix/client/v3/room_keys/version`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3room_keysversion>
pub async fn create_version(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<CreateRequest>,
) -> ApiResult<Json<CreateResponse>> {
    let version = services
        .e2ee
        .create_backup(&auth.who.user_id, &body.algorithm, &body.auth_data)
        .await?;
    Ok(Json(CreateResponse { version }))
}

/// # `GET /_matrix/client/v3/room_keys/version`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3room_keysversion>
pub async fn current_version(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<BackupVersionInfo>> {
    let info = services
        .e2ee
        .backup_version(&auth.who.user_id, None)
        .await?;
    Ok(Json(info))
}

/// # `GET /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3room_keysversionversion>
pub async fn get_version(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(version): MatrixPath<String>,
) -> ApiResult<Json<BackupVersionInfo>> {
    let info = services
        .e2ee
        .backup_version(&auth.who.user_id, Some(&version))
        .await?;
    Ok(Json(info))
}

/// # `PUT /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3room_keysversionversion>
pub async fn update_version(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(version): MatrixPath<String>,
    MatrixJson(body): MatrixJson<Value>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .e2ee
        .update_backup(&auth.who.user_id, &version, &body)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `DELETE /_matrix/client/v3/room_keys/version/{version}`
/// <https://spec.matrix.org/v1.11/client-server-api/#delete_matrixclientv3room_keysversionversion>
pub async fn delete_version(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(version): MatrixPath<String>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .e2ee
        .delete_backup(&auth.who.user_id, &version)
        .await?;
    Ok(Json(EmptyResponse {}))
}

#[derive(Deserialize)]
pub struct VersionQuery {
    pub version: String,
}

/// `{"rooms": {room: {"sessions": {session: data}}}}`.
#[derive(Deserialize)]
pub struct AllKeys {
    pub rooms: BTreeMap<OwnedRoomId, RoomKeys>,
}

#[derive(Deserialize)]
pub struct RoomKeys {
    pub sessions: BTreeMap<String, Value>,
}

#[derive(Serialize)]
pub struct AllKeysResponse {
    pub rooms: BTreeMap<OwnedRoomId, Value>,
}

fn flatten(rooms: BTreeMap<OwnedRoomId, RoomKeys>) -> Vec<BackupKey> {
    rooms
        .into_iter()
        .flat_map(|(room_id, keys)| {
            keys.sessions
                .into_iter()
                .map(move |(session_id, data)| BackupKey {
                    room_id: room_id.clone(),
                    session_id,
                    data,
                })
        })
        .collect()
}

/// # `PUT /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3room_keyskeys>
pub async fn put_all(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<AllKeys>,
) -> ApiResult<Json<Value>> {
    let keys = flatten(body.rooms);
    let answer = services
        .e2ee
        .put_backup_keys(&auth.who.user_id, &query.version, keys)
        .await?;
    Ok(Json(answer))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3room_keyskeysroomid>
pub async fn put_room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(body): MatrixJson<RoomKeys>,
) -> ApiResult<Json<Value>> {
    let keys = flatten(BTreeMap::from([(room_id, body)]));
    let answer = services
        .e2ee
        .put_backup_keys(&auth.who.user_id, &query.version, keys)
        .await?;
    Ok(Json(answer))
}

/// # `PUT /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3room_keyskeysroomidsessionid>
pub async fn put_session(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, session_id)): MatrixPath<(OwnedRoomId, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
    MatrixJson(data): MatrixJson<Value>,
) -> ApiResult<Json<Value>> {
    let keys = vec![BackupKey {
        room_id,
        session_id,
        data,
    }];
    let answer = services
        .e2ee
        .put_backup_keys(&auth.who.user_id, &query.version, keys)
        .await?;
    Ok(Json(answer))
}

/// # `GET /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3room_keyskeys>
pub async fn get_all(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<AllKeysResponse>> {
    let keys = services
        .e2ee
        .backup_keys(&auth.who.user_id, &query.version, None, None)
        .await?;
    Ok(Json(AllKeysResponse {
        rooms: by_room(keys),
    }))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3room_keyskeysroomid>
pub async fn get_room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let keys = services
        .e2ee
        .backup_keys(&auth.who.user_id, &query.version, Some(&room_id), None)
        .await?;
    // A room without keys answers an empty session map, as Synapse does.
    Ok(Json(
        by_room(keys)
            .remove(&room_id)
            .unwrap_or_else(|| serde_json::json!({ "sessions": {} })),
    ))
}

/// # `GET /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3room_keyskeysroomidsessionid>
pub async fn get_session(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, session_id)): MatrixPath<(OwnedRoomId, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let mut keys = services
        .e2ee
        .backup_keys(
            &auth.who.user_id,
            &query.version,
            Some(&room_id),
            Some(&session_id),
        )
        .await?;
    keys.pop()
        .map(|k| Json(k.data))
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "No key backed up for this session"))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys`
/// <https://spec.matrix.org/v1.11/client-server-api/#delete_matrixclientv3room_keyskeys>
pub async fn delete_all(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let answer = services
        .e2ee
        .delete_backup_keys(&auth.who.user_id, &query.version, None, None)
        .await?;
    Ok(Json(answer))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#delete_matrixclientv3room_keyskeysroomid>
pub async fn delete_room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let answer = services
        .e2ee
        .delete_backup_keys(&auth.who.user_id, &query.version, Some(&room_id), None)
        .await?;
    Ok(Json(answer))
}

/// # `DELETE /_matrix/client/v3/room_keys/keys/{roomId}/{sessionId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#delete_matrixclientv3room_keyskeysroomidsessionid>
pub async fn delete_session(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, session_id)): MatrixPath<(OwnedRoomId, String)>,
    MatrixQuery(query): MatrixQuery<VersionQuery>,
) -> ApiResult<Json<Value>> {
    let answer = services
        .e2ee
        .delete_backup_keys(
            &auth.who.user_id,
            &query.version,
            Some(&room_id),
            Some(&session_id),
        )
        .await?;
    Ok(Json(answer))
}
