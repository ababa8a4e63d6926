//! Sending, redacting and reading room events.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedEventId, OwnedRoomId};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath, MatrixQuery};
use crate::service::accounts::IgnoredUsers;
use crate::service::error::ErrorKind;
use crate::service::pdu::client_event_for;
use crate::service::rate_limit::Action;
use crate::service::rooms::{
    attach_bundles, now_ms, EventRequest, PageRequest, Requester, RoomEventFilter,
};
use crate::service::token::{pagination_token, parse_pagination_token};
use crate::service::Services;
use crate::store::{Direction, StoredEvent};

/// Client format for `who`: the transaction id only for the sending device.
fn format_for(event: &StoredEvent, who: &Requester, now: i64) -> Value {
    client_event_for(event, &who.user_id, &who.device_id, now, true)
}

fn format_all(events: &[StoredEvent], who: &Requester, now: i64) -> Vec<Value> {
    events.iter().map(|e| format_for(e, who, now)).collect()
}

/// Events as the reader shows them, without the messages of users they
/// ignore (state stays: it is the room's).
fn format_unignored(
    events: &[StoredEvent],
    who: &Requester,
    ignored: &IgnoredUsers,
    now: i64,
) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.state_key.is_some() || !ignored.contains(&e.sender))
        .map(|e| format_for(e, who, now))
        .collect()
}

fn check_txn_id(txn_id: &str) -> ApiResult<()> {
    if txn_id.is_empty() || txn_id.len() > 255 {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "Invalid transaction id",
        ));
    }
    Ok(())
}

/// What sending an event (or a redaction, or state) answers.
#[derive(Serialize)]
pub struct EventIdResponse {
    pub event_id: OwnedEventId,
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/send/{eventType}/{txnId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3roomsroomidsendeventtypetxnid>
pub async fn send(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, kind, txn_id)): MatrixPath<(OwnedRoomId, String, String)>,
    MatrixJson(content): MatrixJson<Value>,
) -> ApiResult<Json<EventIdResponse>> {
    check_txn_id(&txn_id)?;
    if kind.is_empty() || kind.len() > 255 {
        return Err(ApiError::new(ErrorKind::InvalidParam, "Invalid event type"));
    }
    if kind == "m.room.redaction" || kind == "m.room.create" || kind == "m.room.member" {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            format!("{kind} cannot be sent with /send"),
        ));
    }
    services
        .rate_limiter
        .check(Action::Message, auth.who.user_id.as_str())
        .await?;
    let request = EventRequest {
        kind,
        state_key: None,
        content,
    };
    let event_id = services
        .rooms
        .send_event(&auth.who, &room_id, request, Some(&txn_id))
        .await?;
    // Someone who sent a message has stopped typing.
    services
        .typing
        .stop(&services.rooms, &room_id, &auth.who.user_id)
        .await?;
    services.presence.activity(&auth.who.user_id).await;
    Ok(Json(EventIdResponse { event_id }))
}

#[derive(Debug, Default, Deserialize)]
pub struct RedactBody {
    pub reason: Option<String>,
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/redact/{eventId}/{txnId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3roomsroomidredacteventidtxnid>
pub async fn redact(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id, txn_id)): MatrixPath<(OwnedRoomId, OwnedEventId, String)>,
    MatrixJson(body): MatrixJson<RedactBody>,
) -> ApiResult<Json<EventIdResponse>> {
    check_txn_id(&txn_id)?;
    let mut content = json!({"redacts": event_id});
    if let Some(reason) = body.reason {
        content["reason"] = json!(reason);
    }
    let request = EventRequest {
        kind: "m.room.redaction".into(),
        state_key: None,
        content,
    };
    let event_id = services
        .rooms
        .send_event(&auth.who, &room_id, request, Some(&txn_id))
        .await?;
    Ok(Json(EventIdResponse { event_id }))
}

#[derive(Debug, Deserialize)]
pub struct MessagesQuery {
    pub from: Option<String>,
    pub to: Option<String>,
    pub dir: Option<String>,
    pub limit: Option<i64>,
    pub filter: Option<String>,
}

/// Most events one `/messages` page may hold.
const MAX_PAGE: i64 = 1000;

/// # `GET /_matrix/client/v3/rooms/{roomId}/messages`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidmessages>
pub async fn messages(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<MessagesQuery>,
) -> ApiResult<Json<MessagesResponse>> {
    let dir = match query.dir.as_deref() {
        Some("b") | None => Direction::Backward,
        Some("f") => Direction::Forward,
        Some(_) => return Err(ApiError::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let limit = match query.limit {
        None => 10,
        Some(n) if n >= 0 => n.clamp(1, MAX_PAGE) as usize,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "limit must not be negative",
            ))
        }
    };
    let from = query
        .from
        .as_deref()
        .map(parse_pagination_token)
        .transpose()?;
    let to = query
        .to
        .as_deref()
        .map(parse_pagination_token)
        .transpose()?;
    let filter: RoomEventFilter = match &query.filter {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ApiError::new(ErrorKind::BadJson, format!("Invalid filter: {e}")))?,
        None => RoomEventFilter::default(),
    };
    let page = services
        .rooms
        .messages(
            &auth.who.user_id,
            &room_id,
            PageRequest {
                from,
                to,
                dir,
                limit,
            },
            &filter,
        )
        .await?;
    let ignored = services.accounts.ignored_users(&auth.who.user_id).await?;
    let now = now_ms();
    let bundles = services
        .rooms
        .bundles_in_room(&auth.who, &room_id, &page.events, now)
        .await?;
    let mut chunk = format_unignored(&page.events, &auth.who, &ignored, now);
    attach_bundles(&mut chunk, &bundles);
    Ok(Json(MessagesResponse {
        chunk,
        start: pagination_token(page.start),
        end: page.end.map(pagination_token),
        state: format_all(&page.state, &auth.who, now),
    }))
}

#[derive(Serialize)]
pub struct MessagesResponse {
    pub chunk: Vec<Value>,
    pub start: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub state: Vec<Value>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/event/{eventId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomideventeventid>
pub async fn get_event(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
) -> ApiResult<Json<Value>> {
    let event = services
        .rooms
        .get_event(&auth.who.user_id, &room_id, &event_id)
        .await?;
    let now = now_ms();
    let bundles = services
        .rooms
        .bundles_in_room(&auth.who, &room_id, [&event], now)
        .await?;
    let mut shown = [format_for(&event, &auth.who, now)];
    attach_bundles(&mut shown, &bundles);
    let [shown] = shown;
    Ok(Json(shown))
}

#[derive(Debug, Deserialize)]
pub struct ContextQuery {
    pub limit: Option<i64>,
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/context/{eventId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidcontexteventid>
pub async fn context(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
    MatrixQuery(query): MatrixQuery<ContextQuery>,
) -> ApiResult<Json<ContextResponse>> {
    let limit = query.limit.unwrap_or(10).clamp(0, 100) as usize;
    let (before, event, after) = services
        .rooms
        .context(&auth.who.user_id, &room_id, &event_id, limit)
        .await?;
    let state = services
        .rooms
        .room_state(&auth.who.user_id, &room_id)
        .await
        .unwrap_or_default();
    let ignored = services.accounts.ignored_users(&auth.who.user_id).await?;
    let now = now_ms();
    let start = before
        .last()
        .map(|e| e.stream - 1)
        .unwrap_or(event.stream - 1);
    let end = after.last().map(|e| e.stream).unwrap_or(event.stream);
    let shown = before.iter().chain([&event]).chain(&after);
    let bundles = services
        .rooms
        .bundles_in_room(&auth.who, &room_id, shown, now)
        .await?;
    let mut target = [format_for(&event, &auth.who, now)];
    let mut events_before = format_unignored(&before, &auth.who, &ignored, now);
    let mut events_after = format_unignored(&after, &auth.who, &ignored, now);
    for list in [&mut target[..], &mut events_before, &mut events_after] {
        attach_bundles(list, &bundles);
    }
    let [target] = target;
    Ok(Json(ContextResponse {
        event: target,
        events_before,
        events_after,
        state: format_all(&state, &auth.who, now),
        start: pagination_token(start.max(0)),
        end: pagination_token(end),
    }))
}

#[derive(Serialize)]
pub struct ContextResponse {
    pub event: Value,
    pub events_before: Vec<Value>,
    pub events_after: Vec<Value>,
    pub state: Vec<Value>,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Deserialize)]
pub struct TimestampQuery {
    pub ts: Option<String>,
    pub dir: Option<String>,
}

#[derive(Serialize)]
pub struct TimestampResponse {
    pub event_id: ruma_common::OwnedEventId,
    pub origin_server_ts: i64,
}

/// # `GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv1roomsroomidtimestamp_to_event>
pub async fn timestamp_to_event(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(query): MatrixQuery<TimestampQuery>,
) -> ApiResult<Json<TimestampResponse>> {
    let missing =
        |name: &str| ApiError::new(ErrorKind::MissingParam, format!("{name} is required"));
    let ts: i64 = query
        .ts
        .ok_or_else(|| missing("ts"))?
        .parse()
        .map_err(|_| ApiError::new(ErrorKind::InvalidParam, "ts must be an integer"))?;
    let dir = match query.dir.ok_or_else(|| missing("dir"))?.as_str() {
        "f" => Direction::Forward,
        "b" => Direction::Backward,
        _ => return Err(ApiError::new(ErrorKind::InvalidParam, "dir must be b or f")),
    };
    let event = services
        .rooms
        .event_at(&auth.who.user_id, &room_id, ts, dir)
        .await?;
    Ok(Json(TimestampResponse {
        origin_server_ts: event.pdu["origin_server_ts"].as_i64().unwrap_or(0),
        event_id: event.event_id,
    }))
}
