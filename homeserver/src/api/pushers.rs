//! Pushers (the push targets of a user's devices) and the notifications list.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::Value;

use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixQuery};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::notifications::{
    NotificationService, NotificationsRequest, NotificationsResponse,
};
use crate::service::pushers::PushersResponse;
use crate::service::Services;

/// # `GET /_matrix/client/v3/pushers`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3pushers>
pub async fn get_pushers(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<PushersResponse>> {
    Ok(Json(services.pushers.list(&auth.who.user_id).await?))
}

/// # `POST /_matrix/client/v3/pushers/set`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3pushersset>
pub async fn set_pusher(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<Value>,
) -> ApiResult<Json<EmptyResponse>> {
    services.pushers.set(&auth.who, &body).await?;
    Ok(Json(EmptyResponse {}))
}

#[derive(Debug, Deserialize)]
pub struct NotificationsQuery {
    pub from: Option<String>,
    pub limit: Option<usize>,
    pub only: Option<String>,
}

/// # `GET /_matrix/client/v3/notifications`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3notifications>
pub async fn get_notifications(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixQuery(query): MatrixQuery<NotificationsQuery>,
) -> ApiResult<Json<NotificationsResponse>> {
    let only_highlight = match query.only.as_deref() {
        None => false,
        Some("highlight") => true,
        Some(_) => {
            return Err(ApiError::new(
                ErrorKind::InvalidParam,
                "only may be \"highlight\"",
            ))
        }
    };
    let from = query
        .from
        .as_deref()
        .map(NotificationService::parse_from)
        .transpose()?;
    let request = NotificationsRequest {
        from,
        limit: query.limit,
        only_highlight,
    };
    Ok(Json(services.notifications.list(&auth.who, request).await?))
}
