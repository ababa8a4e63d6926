//! Receipts, read markers, and Tern's per-member message info.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedEventId, OwnedRoomId};
use serde::Deserialize;
use serde_json::json;

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::receipts::{MessageInfoResponse, PostedReceipt};
use crate::service::Services;

#[derive(Debug, Default, Deserialize)]
pub struct ReceiptBody {
    pub thread_id: Option<String>,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/receipt/{receiptType}/{eventId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidreceiptreceipttypeeventid>
///
/// Also takes Tern's `tern.delivered`.
pub async fn post_receipt(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, receipt_type, event_id)): MatrixPath<(OwnedRoomId, String, OwnedEventId)>,
    MatrixJson(body): MatrixJson<ReceiptBody>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .receipts
        .post(
            &services.rooms,
            &services.unread,
            &auth.who,
            PostedReceipt {
                room_id: &room_id,
                receipt_type: &receipt_type,
                event_id: &event_id,
                thread_id: body.thread_id,
            },
        )
        .await?;
    services.presence.activity(&auth.who.user_id).await;
    Ok(Json(EmptyResponse {}))
}

#[derive(Debug, Deserialize)]
pub struct ReadMarkersBody {
    #[serde(rename = "m.fully_read")]
    pub fully_read: Option<OwnedEventId>,
    #[serde(rename = "m.read")]
    pub read: Option<OwnedEventId>,
    #[serde(rename = "m.read.private")]
    pub read_private: Option<OwnedEventId>,
}

/// # `POST /_matrix/client/v3/rooms/{roomId}/read_markers`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3roomsroomidread_markers>
pub async fn read_markers(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(room_id): MatrixPath<OwnedRoomId>,
    MatrixJson(body): MatrixJson<ReadMarkersBody>,
) -> ApiResult<Json<EmptyResponse>> {
    if let Some(event_id) = &body.fully_read {
        // The fully-read marker must name an event the user can see.
        services
            .rooms
            .get_event(&auth.who.user_id, &room_id, event_id)
            .await?;
        services
            .accounts
            .set_account_data(
                &auth.who.user_id,
                Some(&room_id),
                "m.fully_read",
                json!({"event_id": event_id}),
            )
            .await?;
    }
    for (kind, event_id) in [
        ("m.read", &body.read),
        ("m.read.private", &body.read_private),
    ] {
        if let Some(event_id) = event_id {
            services
                .receipts
                .post(
                    &services.rooms,
                    &services.unread,
                    &auth.who,
                    PostedReceipt {
                        room_id: &room_id,
                        receipt_type: kind,
                        event_id,
                        thread_id: None,
                    },
                )
                .await?;
        }
    }
    services.presence.activity(&auth.who.user_id).await;
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/unstable/tern/rooms/{roomId}/receipts/{eventId}`
///
/// Tern's "message info": `sent_ts`, and for every other joined member
/// `delivered_ts` and `read_ts` (null until then), plus `delivered_to_all`
/// and `read_by_all`.
pub async fn message_info(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((room_id, event_id)): MatrixPath<(OwnedRoomId, OwnedEventId)>,
) -> ApiResult<Json<MessageInfoResponse>> {
    let info = services
        .receipts
        .message_info(&services.rooms, &auth.who, &room_id, &event_id)
        .await?;
    Ok(Json(info))
}
