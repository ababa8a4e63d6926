//! What other servers ask about our users' devices and keys:
//! `/user/keys/query`, `/user/keys/claim`, `/user/devices/{userId}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::auth::{NoBody, Signed};
use crate::api::error::{ApiError, ApiResult};
use crate::api::extract::MatrixPath;
use crate::service::error::ErrorKind;
use crate::service::Services;

#[derive(Deserialize)]
pub struct QueryBody {
    device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
}

/// Device and cross-signing keys, as a server answers another.
#[derive(Serialize)]
pub struct QueryResponse {
    device_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, Value>>,
    master_keys: BTreeMap<OwnedUserId, Value>,
    self_signing_keys: BTreeMap<OwnedUserId, Value>,
}

/// # `POST /_matrix/federation/v1/user/keys/query`
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixfederationv1userkeysquery>
pub async fn query(
    State(services): State<Arc<Services>>,
    Signed { origin, body }: Signed<QueryBody>,
) -> ApiResult<Json<QueryResponse>> {
    tracing::debug!(%origin, users = body.device_keys.len(), "key query");
    let answer = services
        .e2ee
        .query_for_federation(&body.device_keys)
        .await?;
    Ok(Json(QueryResponse {
        device_keys: answer.device_keys,
        master_keys: answer.master_keys,
        self_signing_keys: answer.self_signing_keys,
    }))
}

#[derive(Deserialize)]
pub struct ClaimBody {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
}

#[derive(Serialize)]
pub struct ClaimResponse {
    one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, BTreeMap<String, Value>>>,
}

/// # `POST /_matrix/federation/v1/user/keys/claim`
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixfederationv1userkeysclaim>
pub async fn claim(
    State(services): State<Arc<Services>>,
    Signed { origin, body }: Signed<ClaimBody>,
) -> ApiResult<Json<ClaimResponse>> {
    tracing::debug!(%origin, users = body.one_time_keys.len(), "key claim");
    let answer = services
        .e2ee
        .claim_for_federation(&body.one_time_keys)
        .await?;
    Ok(Json(ClaimResponse {
        one_time_keys: answer.one_time_keys,
    }))
}

/// # `GET /_matrix/federation/v1/user/devices/{userId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1userdevicesuserid>
pub async fn devices(
    State(services): State<Arc<Services>>,
    MatrixPath(user_id): MatrixPath<OwnedUserId>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Json<Value>> {
    tracing::debug!(%origin, %user_id, "device list query");
    if user_id.server_name() != services.config.server_name {
        return Err(ApiError::new(
            ErrorKind::InvalidParam,
            "That user is not on this server",
        ));
    }
    Ok(Json(services.e2ee.devices_for_federation(&user_id).await?))
}
