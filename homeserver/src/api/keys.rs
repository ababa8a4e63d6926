//! End-to-end encryption keys: `/keys/upload`, `/keys/query`,
//! `/keys/claim`, `/keys/changes`, cross-signing and signatures.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{OwnedDeviceId, OwnedUserId};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::ApiResult;
use super::extract::{Auth, MatrixJson, MatrixQuery};
use super::EmptyResponse;
use crate::service::accounts::uia::AuthData;
use crate::service::e2ee::{
    ClaimResponse, CrossSigningUpload, KeyQueryResponse, SignatureFailure, UploadKeys,
};
use crate::service::token::SyncToken;
use crate::service::Services;

#[derive(Serialize)]
pub struct UploadResponse {
    pub one_time_key_counts: BTreeMap<String, u64>,
}

/// # `POST /_matrix/client/v3/keys/upload`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3keysupload>
pub async fn upload(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<UploadKeys>,
) -> ApiResult<Json<UploadResponse>> {
    let counts = services.e2ee.upload_keys(&auth.who, body).await?;
    Ok(Json(UploadResponse {
        one_time_key_counts: counts,
    }))
}

#[derive(Deserialize)]
pub struct QueryRequest {
    pub device_keys: BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>,
}

/// # `POST /_matrix/client/v3/keys/query`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3keysquery>
pub async fn query(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<QueryRequest>,
) -> ApiResult<Json<KeyQueryResponse>> {
    let answer = services
        .e2ee
        .query_keys(&auth.who.user_id, &body.device_keys)
        .await?;
    Ok(Json(answer))
}

#[derive(Deserialize)]
pub struct ClaimRequest {
    pub one_time_keys: BTreeMap<OwnedUserId, BTreeMap<OwnedDeviceId, String>>,
}

/// # `POST /_matrix/client/v3/keys/claim`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3keysclaim>
pub async fn claim(
    State(services): State<Arc<Services>>,
    _auth: Auth,
    MatrixJson(body): MatrixJson<ClaimRequest>,
) -> ApiResult<Json<ClaimResponse>> {
    Ok(Json(services.e2ee.claim_keys(&body.one_time_keys).await?))
}

#[derive(Deserialize)]
pub struct ChangesQuery {
    pub from: String,
    pub to: String,
}

#[derive(Serialize)]
pub struct ChangesResponse {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// # `GET /_matrix/client/v3/keys/changes`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3keyschanges>
pub async fn changes(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixQuery(query): MatrixQuery<ChangesQuery>,
) -> ApiResult<Json<ChangesResponse>> {
    let from: SyncToken = query.from.parse()?;
    let to: SyncToken = query.to.parse()?;
    let (changed, left) = services
        .e2ee
        .key_changes(&auth.who.user_id, &from, &to)
        .await?;
    Ok(Json(ChangesResponse { changed, left }))
}

#[derive(Deserialize)]
pub struct DeviceSigningRequest {
    #[serde(flatten)]
    pub keys: CrossSigningUploadBody,
    pub auth: Option<AuthData>,
}

#[derive(Deserialize)]
pub struct CrossSigningUploadBody {
    pub master_key: Option<Value>,
    pub self_signing_key: Option<Value>,
    pub user_signing_key: Option<Value>,
}

/// # `POST /_matrix/client/v3/keys/device_signing/upload`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3keysdevice_signingupload>
pub async fn upload_cross_signing(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<DeviceSigningRequest>,
) -> ApiResult<Json<EmptyResponse>> {
    let upload = CrossSigningUpload {
        master_key: body.keys.master_key,
        self_signing_key: body.keys.self_signing_key,
        user_signing_key: body.keys.user_signing_key,
    };
    if services
        .e2ee
        .cross_signing_needs_auth(&auth.who.user_id, &upload)
        .await?
    {
        services
            .accounts
            .interactive_auth(&auth.who, "device_signing_upload", body.auth.as_ref())
            .await?;
    }
    services
        .e2ee
        .upload_cross_signing(&auth.who, upload)
        .await?;
    Ok(Json(EmptyResponse {}))
}

#[derive(Serialize)]
pub struct SignaturesResponse {
    pub failures: BTreeMap<OwnedUserId, BTreeMap<String, SignatureFailure>>,
}

/// # `POST /_matrix/client/v3/keys/signatures/upload`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixclientv3keyssignaturesupload>
pub async fn upload_signatures(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<BTreeMap<OwnedUserId, BTreeMap<String, Value>>>,
) -> ApiResult<Json<SignaturesResponse>> {
    let failures = services.e2ee.upload_signatures(&auth.who, &body).await?;
    Ok(Json(SignaturesResponse { failures }))
}

#[derive(Deserialize)]
pub struct SendToDeviceRequest {
    pub messages: BTreeMap<OwnedUserId, BTreeMap<String, Value>>,
}

/// # `PUT /_matrix/client/v3/sendToDevice/{eventType}/{txnId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixclientv3sendtodeviceeventtypetxnid>
pub async fn send_to_device(
    State(services): State<Arc<Services>>,
    auth: Auth,
    super::extract::MatrixPath((kind, txn_id)): super::extract::MatrixPath<(String, String)>,
    MatrixJson(body): MatrixJson<SendToDeviceRequest>,
) -> ApiResult<Json<EmptyResponse>> {
    services
        .e2ee
        .send_to_device(&auth.who, &kind, &txn_id, body.messages)
        .await?;
    Ok(Json(EmptyResponse {}))
}
