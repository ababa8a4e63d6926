//! `GET /_matrix/federation/v1/openid/userinfo`: a third party asks whose
//! OpenID token it was handed. Not signed: the caller is rarely a server.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedUserId;
use serde::{Deserialize, Serialize};

use crate::api::error::ApiResult;
use crate::api::extract::MatrixQuery;
use crate::service::Services;

#[derive(Deserialize)]
pub struct UserInfoQuery {
    access_token: String,
}

#[derive(Serialize)]
pub struct UserInfo {
    sub: OwnedUserId,
}

/// # `GET /_matrix/federation/v1/openid/userinfo`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1openiduserinfo>
pub async fn userinfo(
    State(services): State<Arc<Services>>,
    MatrixQuery(query): MatrixQuery<UserInfoQuery>,
) -> ApiResult<Json<UserInfo>> {
    let sub = services.accounts.openid_user(&query.access_token).await?;
    Ok(Json(UserInfo { sub }))
}
