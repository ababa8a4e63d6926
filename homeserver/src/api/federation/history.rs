//! What other servers read of the rooms they share with us: `event`,
//! `state`, `state_ids`, `event_auth`, `backfill`, `get_missing_events`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json;
use ruma_common::{EventId, OwnedEventId, OwnedRoomId, OwnedServerName};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{NoBody, Signed};
use super::membership::query_all;
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::{MatrixPath, MatrixQuery};
use crate::service::error::ErrorKind;
use crate::service::rooms::now_ms;
use crate::service::Services;

/// A transaction as `event` and `backfill` answer.
#[derive(Serialize)]
pub struct PduTransaction {
    origin: OwnedServerName,
    origin_server_ts: i64,
    pdus: Vec<Arc<Value>>,
}

impl PduTransaction {
    fn new(services: &Services, pdus: Vec<Arc<Value>>) -> Self {
        Self {
            origin: services.config.server_name.clone(),
            origin_server_ts: now_ms(),
            pdus,
        }
    }
}

#[derive(Deserialize)]
pub struct AtEvent {
    event_id: OwnedEventId,
}

#[derive(Serialize)]
pub struct StateResponse {
    pdus: Vec<Arc<Value>>,
    auth_chain: Vec<Arc<Value>>,
}

#[derive(Serialize)]
pub struct StateIdsResponse {
    pdu_ids: Vec<OwnedEventId>,
    auth_chain_ids: Vec<OwnedEventId>,
}

#[derive(Serialize)]
pub struct AuthChainResponse {
    auth_chain: Vec<Arc<Value>>,
}

#[derive(Serialize)]
pub struct MissingEventsResponse {
    events: Vec<Arc<Value>>,
}

#[derive(Deserialize)]
pub struct MissingEventsBody {
    #[serde(default)]
    earliest_events: Vec<OwnedEventId>,
    latest_events: Vec<OwnedEventId>,
    #[serde(default = "ten")]
    limit: usize,
    #[serde(default)]
    min_depth: i64,
}

fn ten() -> usize {
    10
}

/// # `GET /_matrix/federation/v1/event/{eventId}`
pub async fn event(
    State(services): State<Arc<Services>>,
    MatrixPath(event_id): MatrixPath<OwnedEventId>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<PduTransaction>> {
    let pdu = services.rooms.event_for_server(&origin, &event_id).await?;
    Ok(Json(PduTransaction::new(&services, vec![pdu])))
}

/// # `GET /_matrix/federation/v1/state/{roomId}?event_id=`
pub async fn state(
    State(services): State<Arc<Services>>,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(AtEvent { event_id }): MatrixQuery<AtEvent>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<StateResponse>> {
    let (state, auth_chain) = services
        .rooms
        .state_for_server(&origin, &room_id, &event_id)
        .await?;
    Ok(Json(StateResponse {
        pdus: state.into_iter().map(|e| e.pdu).collect(),
        auth_chain: auth_chain.into_iter().map(|e| e.pdu).collect(),
    }))
}

/// # `GET /_matrix/federation/v1/state_ids/{roomId}?event_id=`
pub async fn state_ids(
    State(services): State<Arc<Services>>,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixQuery(AtEvent { event_id }): MatrixQuery<AtEvent>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<StateIdsResponse>> {
    let (state, auth_chain) = services
        .rooms
        .state_for_server(&origin, &room_id, &event_id)
        .await?;
    Ok(Json(StateIdsResponse {
        pdu_ids: state.into_iter().map(|e| e.event_id).collect(),
        auth_chain_ids: auth_chain.into_iter().map(|e| e.event_id).collect(),
    }))
}

/// # `GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}`
pub async fn event_auth(
    State(services): State<Arc<Services>>,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<AuthChainResponse>> {
    let auth_chain = services
        .rooms
        .event_auth_for_server(&origin, &room_id, &event_id)
        .await?;
    Ok(Json(AuthChainResponse { auth_chain }))
}

/// # `GET /_matrix/federation/v1/backfill/{roomId}?v=&limit=`
pub async fn backfill(
    State(services): State<Arc<Services>>,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    RawQuery(query): RawQuery,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<PduTransaction>> {
    let from: Vec<OwnedEventId> = query_all(query.as_deref(), "v")
        .into_iter()
        .map(|v| EventId::parse(v).map_err(|e| invalid(format!("v: {e}"))))
        .collect::<ApiResult<_>>()?;
    let limit = match query_all(query.as_deref(), "limit").first() {
        Some(limit) => limit
            .parse::<usize>()
            .map_err(|_| invalid("limit must be a number".into()))?,
        None => return Err(ApiError::new(ErrorKind::MissingParam, "limit is required")),
    };
    if from.is_empty() {
        return Err(ApiError::new(ErrorKind::MissingParam, "v is required"));
    }
    let pdus = services
        .rooms
        .backfill_for_server(&origin, &room_id, &from, limit)
        .await?;
    Ok(Json(PduTransaction::new(&services, pdus)))
}

/// # `POST /_matrix/federation/v1/get_missing_events/{roomId}`
pub async fn get_missing_events(
    State(services): State<Arc<Services>>,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    Signed { origin, body }: Signed<MissingEventsBody>,
) -> ApiResult<Json<MissingEventsResponse>> {
    let events = services
        .rooms
        .missing_events_for_server(
            &origin,
            &room_id,
            &body.earliest_events,
            &body.latest_events,
            body.limit,
            body.min_depth,
        )
        .await?;
    Ok(Json(MissingEventsResponse { events }))
}

fn invalid(message: String) -> ApiError {
    ApiError::new(ErrorKind::InvalidParam, message)
}
