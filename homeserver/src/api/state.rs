//! Room state: read all, read one, set one.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedRoomId;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::events::EventIdResponse;
use super::extract::{Auth, MatrixJson, MatrixPath};
use crate::service::error::ErrorKind;
use crate::service::pdu::client_event;
use crate::service::rooms::now_ms;
use crate::service::Services;

/// # `GET /_matrix/client/v3/rooms/{roomId}/state`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidstate>
pub async fn get_state(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
) -> ApiResult<Json<Vec<Value>>> {
    let events = services
        .rooms
        .room_state(&auth.who.user_id, &room_id)
        .await?;
    let now = now_ms();
    Ok(Json(
        events
            .iter()
            .map(|e| client_event(&e.pdu, &e.event_id, now, None, true))
            .collect(),
    ))
}

/// # `GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn get_state_event(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, kind, state_key)): MatrixPath<(OwnedRoomId, String, String)>,
) -> ApiResult<Json<Value>> {
    let content = services
        .rooms
        .state_event(&auth.who.user_id, &room_id, &kind, &state_key)
        .await?;
    Ok(Json(content))
}

/// The same, with an empty state key.
pub async fn get_state_event_empty_key(
    state: State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, kind)): MatrixPath<(OwnedRoomId, String)>,
) -> ApiResult<Json<Value>> {
    get_state_event(state, auth, MatrixPath((room_id, kind, String::new()))).await
}

/// # `PUT /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3roomsroomidstateeventtypestatekey>
pub async fn put_state_event(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, kind, state_key)): MatrixPath<(OwnedRoomId, String, String)>,
    MatrixJson(content): MatrixJson<Value>,
) -> ApiResult<Json<EventIdResponse>> {
    if kind.is_empty() || kind.len() > 255 {
        return Err(ApiError::new(ErrorKind::InvalidParam, "Invalid event type"));
    }
    let event_id = services
        .rooms
        .set_state(&auth.who, &room_id, &kind, &state_key, content)
        .await?;
    Ok(Json(EventIdResponse { event_id }))
}

/// The same, with an empty state key.
pub async fn put_state_event_empty_key(
    state: State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, kind)): MatrixPath<(OwnedRoomId, String)>,
    body: MatrixJson<Value>,
) -> ApiResult<Json<EventIdResponse>> {
    put_state_event(
        state,
        auth,
        MatrixPath((room_id, kind, String::new())),
        body,
    )
    .await
}
