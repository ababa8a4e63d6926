//! Relations and threads (`/_matrix/client/v1`).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedEventId, OwnedRoomId, RoomId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixPath, MatrixQuery};
use crate::service::error::ErrorKind;
use crate::service::pdu::client_event_for;
use crate::service::rooms::{attach_bundles, now_ms, Requester};
use crate::service::token::{pagination_token, parse_pagination_token};
use crate::service::Services;
use crate::store::{Direction, RelationQuery, StoredEvent};

/// Largest page of relations or threads.
const MAX_PAGE: i64 = 100;

#[derive(Deserialize)]
pub struct RelationsQuery {
    from: Option<String>,
    to: Option<String>,
    limit: Option<i64>,
    dir: Option<String>,
    recurse: Option<bool>,
}

#[derive(Serialize)]
pub struct RelationsResponse {
    chunk: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_batch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    recursion_depth: Option<u8>,
}

fn page_limit(limit: Option<i64>, default: i64) -> ApiResult<usize> {
    match limit {
        None => Ok(default as usize),
        Some(n) if n > 0 => Ok(n.min(MAX_PAGE) as usize),
        Some(_) => Err(ApiError::new(
            ErrorKind::InvalidParam,
            "limit must be positive",
        )),
    }
}

/// Events as the client shows them, with their own bundles.
async fn shown(
    services: &Services,
    who: &Requester,
    room_id: &RoomId,
    events: &[StoredEvent],
) -> ApiResult<Vec<Value>> {
    let now = now_ms();
    let bundles = services
        .rooms
        .bundles_in_room(who, room_id, events, now)
        .await?;
    let mut chunk: Vec<Value> = events
        .iter()
        .map(|e| client_event_for(e, &who.user_id, &who.device_id, now, true))
        .collect();
    attach_bundles(&mut chunk, &bundles);
    Ok(chunk)
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]]`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidrelationseventid>
pub async fn relations(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
    MatrixQuery(query): MatrixQuery<RelationsQuery>,
) -> ApiResult<Json<RelationsResponse>> {
    relations_of(&services, &auth, room_id, event_id, None, None, query).await
}

pub async fn relations_by_type(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id, rel_type)): MatrixPath<(OwnedRoomId, OwnedEventId, String)>,
    MatrixQuery(query): MatrixQuery<RelationsQuery>,
) -> ApiResult<Json<RelationsResponse>> {
    relations_of(
        &services,
        &auth,
        room_id,
        event_id,
        Some(rel_type),
        None,
        query,
    )
    .await
}

pub async fn relations_by_type_and_event_type(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id, rel_type, event_type)): MatrixPath<(
        OwnedRoomId,
        OwnedEventId,
        String,
        String,
    )>,
    MatrixQuery(query): MatrixQuery<RelationsQuery>,
) -> ApiResult<Json<RelationsResponse>> {
    relations_of(
        &services,
        &auth,
        room_id,
        event_id,
        Some(rel_type),
        Some(event_type),
        query,
    )
    .await
}

async fn relations_of(
    services: &Services,
    auth: &Auth,
    room_id: OwnedRoomId,
    event_id: OwnedEventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    query: RelationsQuery,
) -> ApiResult<Json<RelationsResponse>> {
    let dir = match query.dir.as_deref() {
        None | Some("b") => Direction::Backward,
        Some("f") => Direction::Forward,
        Some(_) => return Err(ApiError::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let position = |token: Option<String>| token.as_deref().map(parse_pagination_token).transpose();
    let recurse = query.recurse.unwrap_or(false);
    let request = RelationQuery {
        room_id: &room_id,
        target: &event_id,
        rel_type: rel_type.as_deref(),
        event_type: event_type.as_deref(),
        from: position(query.from)?,
        to: position(query.to)?,
        dir,
        limit: page_limit(query.limit, 50)?,
        recurse,
    };
    let mut page = services.rooms.relations(&auth.who, request).await?;
    let ignored = services.accounts.ignored_users(&auth.who.user_id).await?;
    page.events.retain(|e| !ignored.contains(&e.sender));
    Ok(Json(RelationsResponse {
        chunk: shown(services, &auth.who, &room_id, &page.events).await?,
        next_batch: page.next.map(pagination_token),
        recursion_depth: recurse.then_some(3),
    }))
}

#[derive(Deserialize)]
pub struct ThreadsQuery {
    include: Option<String>,
    from: Option<String>,
    limit: Option<i64>,
}

#[derive(Serialize)]
pub struct ThreadsResponse {
    chunk: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_batch: Option<String>,
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/threads`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidthreads>
pub async fn threads(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<ThreadsQuery>,
) -> ApiResult<Json<ThreadsResponse>> {
    let participated = match query.include.as_deref() {
        None | Some("all") => false,
        Some("participated") => true,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "include must be all or participated",
            ))
        }
    };
    let before = query
        .from
        .as_deref()
        .map(parse_pagination_token)
        .transpose()?;
    let limit = page_limit(query.limit, 50)?;
    let (roots, next) = services
        .rooms
        .threads(&auth.who, &room_id, participated, before, limit)
        .await?;
    Ok(Json(ThreadsResponse {
        chunk: shown(&services, &auth.who, &room_id, &roots).await?,
        next_batch: next.map(pagination_token),
    }))
}
