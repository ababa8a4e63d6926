//! Creating rooms, membership, and member lists.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomId, OwnedRoomOrAliasId, OwnedUserId};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixPath, MatrixQuery};
use crate::service::pdu::client_event;
use crate::service::rooms::{now_ms, CreateRoomRequest};
use crate::service::Services;

/// # `POST /_matrix/client/v3/createRoom`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3createroom>
pub async fn create_room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<CreateRoomRequest>,
) -> ApiResult<Json<Value>> {
    let room_id = services.rooms.create_room(&auth.who, body).await?;
    Ok(Json(json!({"room_id": room_id})))
}

#[derive(Debug, Default, Deserialize)]
pub struct ReasonBody {
    pub reason: Option<String>,
}

/// # `POST /_matrix/client/v3/join/{roomIdOrAlias}`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3joinroomidoralias>
pub async fn join(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room): MatrixPath<OwnedRoomOrAliasId>,
    MatrixJson(body): MatrixJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    let room_id = services
        .rooms
        .join(&auth.who, &room, body.reason.as_deref())
        .await?;
    Ok(Json(json!({"room_id": room_id})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidjoin>
pub async fn join_by_id(
    state: State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    body: MatrixJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    join(state, auth, MatrixPath(room_id.into()), body).await
}

/// # `GET /_matrix/client/v3/joined_rooms`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3joined_rooms>
pub async fn joined_rooms(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<Value>> {
    let rooms = services.rooms.joined_rooms(&auth.who.user_id).await?;
    Ok(Json(json!({"joined_rooms": rooms})))
}

#[derive(Debug, Deserialize)]
pub struct TargetBody {
    pub user_id: OwnedUserId,
    pub reason: Option<String>,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/invite`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidinvite>
pub async fn invite(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<Value>> {
    services
        .rooms
        .invite(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidleave>
pub async fn leave(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<ReasonBody>,
) -> ApiResult<Json<Value>> {
    services
        .rooms
        .leave(&auth.who, &room_id, body.reason.as_deref())
        .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidforget>
pub async fn forget(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> ApiResult<Json<Value>> {
    services.rooms.forget(&auth.who, &room_id).await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidkick>
pub async fn kick(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<Value>> {
    services
        .rooms
        .kick(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidban>
pub async fn ban(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<Value>> {
    services
        .rooms
        .ban(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(json!({})))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidunban>
pub async fn unban(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<Value>> {
    services
        .rooms
        .unban(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(json!({})))
}

#[derive(Debug, Deserialize)]
pub struct MembersQuery {
    pub membership: Option<String>,
    pub not_membership: Option<String>,
    #[allow(dead_code)]
    pub at: Option<String>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidmembers>
pub async fn members(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<MembersQuery>,
) -> ApiResult<Json<Value>> {
    let events = services
        .rooms
        .member_events(&auth.who.user_id, &room_id)
        .await?;
    let now = now_ms();
    let chunk: Vec<Value> = events
        .iter()
        .filter(|e| {
            let m = e.pdu["content"]["membership"].as_str().unwrap_or_default();
            query.membership.as_deref().is_none_or(|want| want == m)
                && query.not_membership.as_deref().is_none_or(|skip| skip != m)
        })
        .map(|e| client_event(&e.pdu, &e.event_id, now, None, true))
        .collect();
    Ok(Json(json!({"chunk": chunk})))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidjoined_members>
pub async fn joined_members(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> ApiResult<Json<Value>> {
    let events = services
        .rooms
        .member_events(&auth.who.user_id, &room_id)
        .await?;
    let mut joined = Map::new();
    for e in events
        .iter()
        .filter(|e| e.pdu["content"]["membership"] == "join")
    {
        let content = &e.pdu["content"];
        joined.insert(
            e.state_key.clone().unwrap_or_default(),
            json!({"display_name": content.get("displayname"), "avatar_url": content.get("avatar_url")}),
        );
    }
    Ok(Json(json!({"joined": joined})))
}
