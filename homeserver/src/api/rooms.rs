//! Creating rooms, membership, and member lists.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedRoomId, OwnedRoomOrAliasId, OwnedServerName, OwnedUserId};
use ruma_events::room::member::MembershipState;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath, MatrixQuery};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::pdu::client_event;
use crate::service::rooms::state::membership_of;
use crate::service::rooms::{now_ms, CreateRoomRequest};
use crate::service::token::parse_pagination_token;
use crate::service::Services;

/// # `POST /_matrix/client/v3/createRoom`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3createroom>
pub async fn create_room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<CreateRoomRequest>,
) -> ApiResult<Json<RoomIdResponse>> {
    let room_id = services.rooms.create_room(&auth.who, body).await?;
    Ok(Json(RoomIdResponse { room_id }))
}

/// What creating or joining a room answers.
#[derive(Serialize)]
pub struct RoomIdResponse {
    pub room_id: OwnedRoomId,
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
    uri: axum::http::Uri,
    MatrixJson(body): MatrixJson<ReasonBody>,
) -> ApiResult<Json<RoomIdResponse>> {
    let via = via_servers(&uri)?;
    let room_id = services
        .rooms
        .join(&auth.who, &room, body.reason.as_deref(), &via)
        .await?;
    Ok(Json(RoomIdResponse { room_id }))
}

/// The repeated `via` (and deprecated `server_name`) query parameters: the
/// servers to join a remote room through.
fn via_servers(uri: &axum::http::Uri) -> ApiResult<Vec<OwnedServerName>> {
    let query = uri.query().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .filter(|(key, _)| key == "via" || key == "server_name")
        .map(|(_, value)| {
            ruma_common::ServerName::parse(value.as_ref()).map_err(|_| {
                ApiError::new(
                    ErrorKind::InvalidParam,
                    format!("Invalid server name {value:?}"),
                )
            })
        })
        .collect()
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/join`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidjoin>
pub async fn join_by_id(
    state: State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    uri: axum::http::Uri,
    body: MatrixJson<ReasonBody>,
) -> ApiResult<Json<RoomIdResponse>> {
    join(state, auth, MatrixPath(room_id.into()), uri, body).await
}

/// # `GET /_matrix/client/v3/joined_rooms`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3joined_rooms>
pub async fn joined_rooms(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<JoinedRoomsResponse>> {
    let joined_rooms = services.rooms.joined_rooms(&auth.who.user_id).await?;
    Ok(Json(JoinedRoomsResponse { joined_rooms }))
}

#[derive(Serialize)]
pub struct JoinedRoomsResponse {
    pub joined_rooms: Vec<OwnedRoomId>,
}

#[derive(Deserialize)]
pub struct MutualRoomsQuery {
    user_id: Option<String>,
    from: Option<String>,
}

#[derive(Serialize)]
pub struct MutualRoomsResponse {
    joined: Vec<OwnedRoomId>,
    count: usize,
}

/// # `GET /_matrix/client/v1/mutual_rooms`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1mutual_rooms>
///
/// One batch holds every room, so no `next_batch` is ever handed out.
pub async fn mutual_rooms(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixQuery(query): MatrixQuery<MutualRoomsQuery>,
) -> ApiResult<Json<MutualRoomsResponse>> {
    let other = query
        .user_id
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "user_id is required"))?;
    if query.from.is_some() {
        return Err(ApiError::new(ErrorKind::InvalidParam, "Unknown from token"));
    }
    // A malformed id, or one's own, is refused; a well-formed id of nobody
    // shares no rooms, as the spec asks.
    let other = OwnedUserId::try_from(other)
        .ok()
        .filter(|other| *other != auth.who.user_id)
        .ok_or_else(|| {
            ApiError::new(ErrorKind::InvalidParam, "The user ID provided was invalid")
        })?;
    let theirs = services.rooms.joined_rooms(&other).await?;
    let mut joined = services.rooms.joined_rooms(&auth.who.user_id).await?;
    // Both lists come sorted.
    joined.retain(|room| theirs.binary_search(room).is_ok());
    let count = joined.len();
    Ok(Json(MutualRoomsResponse { joined, count }))
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
) -> ApiResult<Json<EmptyResponse>> {
    services
        .rooms
        .invite(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/leave`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidleave>
pub async fn leave(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<ReasonBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .rooms
        .leave(&auth.who, &room_id, body.reason.as_deref())
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/forget`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidforget>
pub async fn forget(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> ApiResult<Json<EmptyResponse>> {
    services.rooms.forget(&auth.who, &room_id).await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/kick`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidkick>
pub async fn kick(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .rooms
        .kick(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/ban`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidban>
pub async fn ban(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .rooms
        .ban(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/unban`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidunban>
pub async fn unban(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<TargetBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .rooms
        .unban(&auth.who, &room_id, &body.user_id, body.reason.as_deref())
        .await?;
    Ok(Json(EmptyResponse {}))
}

#[derive(Debug, Deserialize)]
pub struct MembersQuery {
    pub membership: Option<MembershipState>,
    pub not_membership: Option<MembershipState>,
    /// A pagination token: the members at that point of history.
    pub at: Option<String>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/members`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidmembers>
pub async fn members(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<MembersQuery>,
) -> ApiResult<Json<MembersResponse>> {
    let events = match query.at.as_deref() {
        Some(at) => {
            let at = parse_pagination_token(at)?;
            let state = services
                .rooms
                .state_at(&auth.who.user_id, &room_id, at)
                .await?;
            state
                .into_iter()
                .filter(|e| e.kind == "m.room.member")
                .collect()
        }
        None => {
            services
                .rooms
                .member_events(&auth.who.user_id, &room_id)
                .await?
        }
    };
    let now = now_ms();
    let chunk = events
        .iter()
        .filter(|e| {
            let m = membership_of(&e.pdu["content"]);
            query
                .membership
                .as_ref()
                .is_none_or(|want| Some(want) == m.as_ref())
                && query
                    .not_membership
                    .as_ref()
                    .is_none_or(|skip| Some(skip) != m.as_ref())
        })
        .map(|e| client_event(&e.pdu, &e.event_id, now, None, true))
        .collect();
    Ok(Json(MembersResponse { chunk }))
}

#[derive(Serialize)]
pub struct MembersResponse {
    pub chunk: Vec<Value>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/joined_members`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidjoined_members>
pub async fn joined_members(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> ApiResult<Json<JoinedMembersResponse>> {
    let events = services
        .rooms
        .member_events(&auth.who.user_id, &room_id)
        .await?;
    let mut joined = BTreeMap::new();
    for e in events
        .iter()
        .filter(|e| membership_of(&e.pdu["content"]) == Some(MembershipState::Join))
    {
        let content = &e.pdu["content"];
        let member = RoomMember {
            display_name: content.get("displayname").cloned(),
            avatar_url: content.get("avatar_url").cloned(),
        };
        joined.insert(e.state_key.clone().unwrap_or_default(), member);
    }
    Ok(Json(JoinedMembersResponse { joined }))
}

#[derive(Serialize)]
pub struct JoinedMembersResponse {
    pub joined: BTreeMap<String, RoomMember>,
}

/// A joined member's profile as their member event gives it (null if unset).
#[derive(Serialize)]
pub struct RoomMember {
    pub display_name: Option<Value>,
    pub avatar_url: Option<Value>,
}
