//! Pushers: the push targets of a user's devices.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson};
use crate::service::Services;

/// # `GET /_matrix/client/v3/pushers`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3pushers>
pub async fn get_pushers(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<Value>> {
    Ok(Json(services.pushers.list(&auth.who.user_id).await?))
}

/// # `POST /_matrix/client/v3/pushers/set`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3pushersset>
pub async fn set_pusher(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<Value>,
) -> ApiResult<Json<Value>> {
    services.pushers.set(&auth.who, &body).await?;
    Ok(Json(json!({})))
}
