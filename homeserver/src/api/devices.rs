//! Device management: `/devices`, `/devices/{deviceId}`, `/delete_devices`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedDeviceId, UserId};
use serde::{Deserialize, Serialize};

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixPath};
use super::EmptyResponse;
use crate::service::accounts::uia::AuthData;
use crate::service::Services;
use crate::store::e2ee::DeviceRecord;

/// A device as the API shows it.
#[derive(Serialize)]
pub struct Device {
    pub device_id: OwnedDeviceId,
    pub display_name: Option<String>,
    pub last_seen_ip: Option<String>,
    pub last_seen_ts: Option<i64>,
}

impl From<DeviceRecord> for Device {
    fn from(d: DeviceRecord) -> Self {
        Self {
            device_id: d.device_id,
            display_name: d.display_name,
            last_seen_ip: d.last_seen_ip,
            last_seen_ts: d.last_seen_ts,
        }
    }
}

#[derive(Serialize)]
pub struct DevicesResponse {
    pub devices: Vec<Device>,
}

/// # `GET /_matrix/client/v3/devices`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3devices>
pub async fn list(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<DevicesResponse>> {
    let devices = services.accounts.devices(&auth.who.user_id).await?;
    Ok(Json(DevicesResponse {
        devices: devices.into_iter().map(Into::into).collect(),
    }))
}

/// # `GET /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3devicesdeviceid>
pub async fn get(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(device_id): MatrixPath<OwnedDeviceId>,
) -> ApiResult<Json<Device>> {
    let device = services
        .accounts
        .device(&auth.who.user_id, &device_id)
        .await?;
    Ok(Json(device.into()))
}

#[derive(Deserialize)]
pub struct RenameRequest {
    pub display_name: Option<String>,
}

/// # `PUT /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3devicesdeviceid>
pub async fn rename(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(device_id): MatrixPath<OwnedDeviceId>,
    MatrixJson(body): MatrixJson<RenameRequest>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .accounts
        .rename_device(&auth.who.user_id, &device_id, body.display_name.as_deref())
        .await?;
    Ok(Json(EmptyResponse {}))
}

#[derive(Deserialize)]
pub struct DeleteRequest {
    pub auth: Option<AuthData>,
}

/// # `DELETE /_matrix/client/v3/devices/{deviceId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#delete_matrixclientv3devicesdeviceid>
pub async fn delete(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath(device_id): MatrixPath<OwnedDeviceId>,
    MatrixJson(body): MatrixJson<DeleteRequest>,
) -> ApiResult<Json<EmptyResponse>> {
    // Unknown devices are refused before the password is asked for.
    services
        .accounts
        .device(&auth.who.user_id, &device_id)
        .await?;
    delete_devices_of(&services, &auth, vec![device_id], body.auth).await
}

#[derive(Deserialize)]
pub struct DeleteManyRequest {
    pub devices: Vec<OwnedDeviceId>,
    pub auth: Option<AuthData>,
}

/// # `POST /_matrix/client/v3/delete_devices`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3delete_devices>
pub async fn delete_many(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<DeleteManyRequest>,
) -> ApiResult<Json<EmptyResponse>> {
    delete_devices_of(&services, &auth, body.devices, body.auth).await
}

async fn delete_devices_of(
    services: &Services,
    auth: &Auth,
    devices: Vec<OwnedDeviceId>,
    uia: Option<AuthData>,
) -> ApiResult<Json<EmptyResponse>> {
    let user: &UserId = &auth.who.user_id;
    services
        .accounts
        .interactive_auth(&auth.who, "delete_devices", uia.as_ref())
        .await?;
    services.accounts.delete_devices(user, &devices).await?;
    for device in &devices {
        services
            .pushers
            .remove_for_logout(user, Some(device), None)
            .await?;
    }
    Ok(Json(EmptyResponse {}))
}
