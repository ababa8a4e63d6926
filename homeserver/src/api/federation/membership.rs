//! Another server's user joining or leaving a room we hold
//! (`make_join`/`send_join` v2, `make_leave`/`send_leave` v2), and another
//! server inviting one of our users (`invite` v2).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::Json;
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedServerName, OwnedUserId, RoomVersionId};
use ruma_events::room::member::MembershipState;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;

use super::auth::{NoBody, Signed};
use crate::api::error::ApiResult;
use crate::api::extract::MatrixPath;
use crate::service::rooms::{IncomingInvite, JoinedAnswer, Template};
use crate::service::Services;

#[derive(Serialize)]
pub struct TemplateResponse {
    room_version: RoomVersionId,
    event: Value,
}

impl From<Template> for TemplateResponse {
    fn from(Template { version, event }: Template) -> Self {
        Self {
            room_version: version,
            event,
        }
    }
}

#[derive(Serialize)]
pub struct SendJoinResponse {
    origin: OwnedServerName,
    state: Vec<Arc<Value>>,
    auth_chain: Vec<Arc<Value>>,
    event: Value,
    members_omitted: bool,
    servers_in_room: Vec<OwnedServerName>,
}

/// `{}`: what `send_leave` v2 answers.
#[derive(Serialize)]
pub struct Empty {}

/// The values of every `key=` in a query string (`ver` may repeat).
pub(super) fn query_all(query: Option<&str>, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// # `GET /_matrix/federation/v1/make_join/{roomId}/{userId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_joinroomiduserid>
pub async fn make_join(
    State(services): State<Arc<Services>>,
    MatrixPath((room_id, user_id)): MatrixPath<(OwnedRoomId, OwnedUserId)>,
    RawQuery(query): RawQuery,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<TemplateResponse>> {
    // No `ver` means version 1 only, which this server does not hold.
    let versions: Vec<RoomVersionId> = query_all(query.as_deref(), "ver")
        .into_iter()
        .filter_map(|v| RoomVersionId::try_from(v).ok())
        .collect();
    let template = services
        .rooms
        .make_membership(
            &origin,
            &room_id,
            &user_id,
            MembershipState::Join,
            &versions,
        )
        .await?;
    Ok(Json(template.into()))
}

/// # `PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2send_joinroomideventid>
///
/// The full state is always sent (`omit_members` is a request this server
/// may decline).
pub async fn send_join(
    State(services): State<Arc<Services>>,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> ApiResult<Json<SendJoinResponse>> {
    let JoinedAnswer {
        state,
        auth_chain,
        event,
        servers,
    } = services
        .rooms
        .send_join(&origin, &room_id, &event_id, &body)
        .await?;
    Ok(Json(SendJoinResponse {
        origin: services.config.server_name.clone(),
        state,
        auth_chain,
        event,
        members_omitted: false,
        servers_in_room: servers,
    }))
}

/// # `GET /_matrix/federation/v1/make_leave/{roomId}/{userId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1make_leaveroomiduserid>
pub async fn make_leave(
    State(services): State<Arc<Services>>,
    MatrixPath((room_id, user_id)): MatrixPath<(OwnedRoomId, OwnedUserId)>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<TemplateResponse>> {
    let template = services
        .rooms
        .make_membership(&origin, &room_id, &user_id, MembershipState::Leave, &[])
        .await?;
    Ok(Json(template.into()))
}

/// # `PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2send_leaveroomideventid>
pub async fn send_leave(
    State(services): State<Arc<Services>>,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<Box<RawValue>>,
) -> ApiResult<Json<Empty>> {
    services
        .rooms
        .send_leave(&origin, &room_id, &event_id, &body)
        .await?;
    Ok(Json(Empty {}))
}

#[derive(Deserialize)]
pub struct InviteBody {
    room_version: RoomVersionId,
    event: Box<RawValue>,
    #[serde(default)]
    invite_room_state: Vec<Value>,
}

#[derive(Serialize)]
pub struct InviteResponse {
    event: Value,
}

/// # `PUT /_matrix/federation/v2/invite/{roomId}/{eventId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#put_matrixfederationv2inviteroomideventid>
pub async fn invite(
    State(services): State<Arc<Services>>,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
    Signed { origin, body }: Signed<InviteBody>,
) -> ApiResult<Json<InviteResponse>> {
    let event = services
        .rooms
        .receive_invite(
            &origin,
            IncomingInvite {
                room_id: &room_id,
                event_id: &event_id,
                version: &body.room_version,
                event: &body.event,
                room_state: &body.invite_room_state,
            },
        )
        .await?;
    Ok(Json(InviteResponse { event }))
}
