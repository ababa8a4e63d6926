//! Room aliases and the public room directory.

use ruma_common::{OwnedRoomAliasId, OwnedRoomId, OwnedServerName};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::federation::not_federating;
use crate::service::rooms::PublicRoom;
use crate::service::Services;

#[derive(Serialize)]
pub struct AliasResponse {
    pub room_id: OwnedRoomId,
    pub servers: Vec<OwnedServerName>,
}

/// # `GET /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3directoryroomroomalias>
pub async fn get_alias(
    State(services): State<Arc<Services>>,
    MatrixPath(alias): MatrixPath<OwnedRoomAliasId>,
) -> ApiResult<Json<AliasResponse>> {
    if alias.server_name() != services.config.server_name {
        let federation = services.federation.as_ref().ok_or_else(not_federating)?;
        let (room_id, servers) = federation.query_alias(&alias).await?;
        return Ok(Json(AliasResponse { room_id, servers }));
    }
    let room_id = services.rooms.resolve_alias(&alias).await?;
    let servers = vec![services.config.server_name.clone()];
    Ok(Json(AliasResponse { room_id, servers }))
}

#[derive(Debug, Deserialize)]
pub struct AliasBody {
    pub room_id: OwnedRoomId,
}

/// # `PUT /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3directoryroomroomalias>
pub async fn put_alias(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(alias): MatrixPath<OwnedRoomAliasId>,
    MatrixJson(body): MatrixJson<AliasBody>,
) -> Result<Json<EmptyResponse>, (StatusCode, ApiError)> {
    match services
        .rooms
        .create_alias(&auth.who, &alias, &body.room_id)
        .await
    {
        Ok(()) => Ok(Json(EmptyResponse {})),
        // The spec answers a taken alias with 409 here (400 on createRoom).
        Err(err) if err.kind == ErrorKind::RoomInUse => Err((StatusCode::CONFLICT, err.into())),
        Err(err) => {
            let err = ApiError::from(err);
            Err((err.status(), err))
        }
    }
}

/// # `DELETE /_matrix/client/v3/directory/room/{roomAlias}`
/// <https://spec.matrix.org/v1.11/client-server-api/#delete_matrixclientv3directoryroomroomalias>
pub async fn delete_alias(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(alias): MatrixPath<OwnedRoomAliasId>,
) -> ApiResult<Json<EmptyResponse>> {
    services.rooms.delete_alias(&auth.who, &alias).await?;
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/aliases`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidaliases>
pub async fn room_aliases(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> ApiResult<Json<AliasesResponse>> {
    let aliases = services
        .rooms
        .room_aliases(&auth.who.user_id, &room_id)
        .await?;
    Ok(Json(AliasesResponse { aliases }))
}

#[derive(Serialize)]
pub struct AliasesResponse {
    pub aliases: Vec<OwnedRoomAliasId>,
}

#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsBody {
    pub limit: Option<i64>,
    pub since: Option<String>,
}

/// The query of `GET /publicRooms`: paging, and which server's directory.
#[derive(Debug, Default, Deserialize)]
pub struct PublicRoomsQuery {
    pub limit: Option<i64>,
    pub since: Option<String>,
    pub server: Option<OwnedServerName>,
}

/// `POST /publicRooms` names the server in its query, the rest in its body.
#[derive(Debug, Default, Deserialize)]
pub struct ServerQuery {
    pub server: Option<OwnedServerName>,
}

/// # `GET /_matrix/client/v3/publicRooms`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3publicrooms>
pub async fn public_rooms(
    State(services): State<Arc<Services>>,
    super::extract::MatrixQuery(query): super::extract::MatrixQuery<PublicRoomsQuery>,
) -> ApiResult<Response> {
    let body = PublicRoomsBody {
        limit: query.limit,
        since: query.since,
    };
    public_rooms_of(&services, query.server, body).await
}

/// # `POST /_matrix/client/v3/publicRooms`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3publicrooms>
pub async fn public_rooms_post(
    State(services): State<Arc<Services>>,
    _auth: Auth,
    super::extract::MatrixQuery(query): super::extract::MatrixQuery<ServerQuery>,
    MatrixJson(body): MatrixJson<PublicRoomsBody>,
) -> ApiResult<Response> {
    public_rooms_of(&services, query.server, body).await
}

/// This server's directory, or another's over federation.
async fn public_rooms_of(
    services: &Services,
    server: Option<OwnedServerName>,
    body: PublicRoomsBody,
) -> ApiResult<Response> {
    match server {
        Some(server) if server != services.config.server_name => {
            let federation = services.federation.as_ref().ok_or_else(not_federating)?;
            let limit = match body.limit {
                Some(n) if n > 0 => Some(n.min(500) as u64),
                Some(_) => {
                    return Err(ApiError::new(
                        ErrorKind::InvalidParam,
                        "limit must be positive",
                    ))
                }
                None => None,
            };
            let page = federation
                .query_public_rooms(&server, limit, body.since)
                .await?;
            Ok(Json(RemotePublicRooms {
                chunk: page.chunk,
                next_batch: page.next_batch,
                prev_batch: page.prev_batch,
                total_room_count_estimate: page.total_room_count_estimate,
            })
            .into_response())
        }
        _ => Ok(list_public(services, body).await?.into_response()),
    }
}

/// Another server's directory page, as it gave it.
#[derive(Serialize)]
pub struct RemotePublicRooms {
    pub chunk: Vec<ruma_common::directory::PublicRoomsChunk>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_room_count_estimate: Option<js_int::UInt>,
}

#[derive(Serialize)]
pub struct PublicRoomsResponse {
    pub chunk: Vec<PublicRoom>,
    pub total_room_count_estimate: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prev_batch: Option<String>,
}

/// This server's public rooms, a page at a time (`o<offset>` tokens); the
/// federation endpoint serves the same.
pub(crate) async fn list_public(
    services: &Services,
    query: PublicRoomsBody,
) -> ApiResult<Json<PublicRoomsResponse>> {
    let limit = match query.limit {
        Some(n) if n > 0 => n.min(500) as usize,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "limit must be positive",
            ))
        }
        None => 100,
    };
    let offset: usize = match query.since.as_deref() {
        Some(s) => s
            .strip_prefix('o')
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| ApiError::new(ErrorKind::InvalidParam, "Invalid since token"))?,
        None => 0,
    };
    let (chunk, total) = services.rooms.public_rooms(offset, limit).await?;
    // Saturating: `since` is the client's, and may be any number.
    let next = offset.saturating_add(limit);
    Ok(Json(PublicRoomsResponse {
        chunk,
        total_room_count_estimate: total,
        next_batch: (next < total).then(|| format!("o{next}")),
        prev_batch: (offset > 0).then(|| format!("o{}", offset.saturating_sub(limit))),
    }))
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    Public,
    Private,
}

#[derive(Serialize)]
pub struct VisibilityResponse {
    visibility: Visibility,
}

/// # `GET /_matrix/client/v3/directory/list/room/{roomId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3directorylistroomroomid>
pub async fn get_listing(
    State(services): State<Arc<Services>>,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> ApiResult<Json<VisibilityResponse>> {
    let visibility = match services.rooms.is_listed(&room_id).await? {
        true => Visibility::Public,
        false => Visibility::Private,
    };
    Ok(Json(VisibilityResponse { visibility }))
}

#[derive(Deserialize)]
pub struct VisibilityBody {
    visibility: Option<serde_json::Value>,
}

/// # `PUT /_matrix/client/v3/directory/list/room/{roomId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#put_matrixclientv3directorylistroomroomid>
pub async fn put_listing(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<VisibilityBody>,
) -> ApiResult<Json<EmptyResponse>> {
    // Absent means public, as the spec's default says.
    let public = match body.visibility.as_ref().map(|v| v.as_str()) {
        None => true,
        Some(Some("public")) => true,
        Some(Some("private")) => false,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "visibility must be public or private",
            ))
        }
    };
    services
        .rooms
        .set_listed(&auth.who, &room_id, public)
        .await?;
    Ok(Json(EmptyResponse {}))
}
