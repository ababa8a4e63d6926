//! Reports of events, rooms and users, kept for the administrators.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::rooms::now_ms;
use crate::service::Services;
use crate::store::Report;

#[derive(Deserialize)]
pub struct ReportBody {
    #[serde(default, deserialize_with = "crate::service::rooms::present")]
    reason: Option<String>,
    #[serde(default, deserialize_with = "crate::service::rooms::present")]
    score: Option<i64>,
}

fn report_of(auth: &Auth, body: ReportBody) -> ApiResult<Report> {
    if body.score.is_some_and(|s| !(-100..=0).contains(&s)) {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "score must be between -100 and 0",
        ));
    }
    Ok(Report {
        id: 0,
        reporter: auth.who.user_id.clone(),
        room_id: None,
        event_id: None,
        user_id: None,
        reason: body.reason,
        score: body.score,
        received_ts: now_ms(),
    })
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report/{eventId}`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreporteventid>
///
/// Only an event the reporter can see may be reported; any other is
/// "not found", so a report reveals nothing about it.
pub async fn event(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
    MatrixJson(body): MatrixJson<ReportBody>,
) -> ApiResult<Json<EmptyResponse>> {
    let not_found = || ApiError::new(ErrorKind::NotFound, "Event not found");
    match services
        .rooms
        .get_event(&auth.who.user_id, &room_id, &event_id)
        .await
    {
        Ok(_) => {}
        Err(e) if matches!(e.kind, ErrorKind::NotFound | ErrorKind::Forbidden) => {
            return Err(not_found())
        }
        Err(e) => return Err(e.into()),
    }
    let report = Report {
        room_id: Some(room_id),
        event_id: Some(event_id),
        ..report_of(&auth, body)?
    };
    services.accounts.report(report).await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/report`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3roomsroomidreport>
pub async fn room(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<ReportBody>,
) -> ApiResult<Json<EmptyResponse>> {
    if services.rooms.state_snapshot(&room_id).await?.is_none() {
        return Err(ApiError::new(ErrorKind::NotFound, "Room not found"));
    }
    let report = Report {
        room_id: Some(room_id),
        ..report_of(&auth, body)?
    };
    services.accounts.report(report).await?;
    Ok(Json(EmptyResponse {}))
}

/// # `POST /_matrix/client/v3/users/{userId}/report`
/// <https://spec.matrix.org/v1.16/client-server-api/#post_matrixclientv3usersuseridreport>
///
/// A local user must exist; another server's users are taken on trust.
pub async fn user(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    MatrixJson(body): MatrixJson<ReportBody>,
) -> ApiResult<Json<EmptyResponse>> {
    if user_id.server_name() == services.config.server_name {
        // `M_NOT_FOUND` when there is no such account.
        services.accounts.profile(&user_id).await?;
    }
    let report = Report {
        user_id: Some(user_id),
        ..report_of(&auth, body)?
    };
    services.accounts.report(report).await?;
    Ok(Json(EmptyResponse {}))
}
