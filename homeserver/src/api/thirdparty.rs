//! Third-party networks reached through bridges (application services).
//!
//! This server runs no bridges, so it knows no protocols: the lists are
//! empty and a named protocol is unknown.

use std::collections::BTreeMap;

use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixPath, MatrixQuery};
use crate::service::error::ErrorKind;

/// # `GET /_matrix/client/v3/thirdparty/protocols`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3thirdpartyprotocols>
pub async fn protocols(_auth: Auth) -> Json<BTreeMap<String, Value>> {
    Json(BTreeMap::new())
}

fn unknown_protocol() -> ApiError {
    ApiError::new(ErrorKind::NotFound, "No bridge serves this protocol")
}

/// # `GET /_matrix/client/v3/thirdparty/protocol/{protocol}` and the
/// protocol's `location` and `user` lookups
pub async fn protocol(_auth: Auth, MatrixPath(_protocol): MatrixPath<String>) -> ApiResult<()> {
    Err(unknown_protocol())
}

#[derive(Deserialize)]
pub struct AliasQuery {
    alias: Option<String>,
}

/// # `GET /_matrix/client/v3/thirdparty/location?alias=`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3thirdpartylocation>
pub async fn locations(
    _auth: Auth,
    MatrixQuery(query): MatrixQuery<AliasQuery>,
) -> ApiResult<Json<[(); 0]>> {
    query
        .alias
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "alias is required"))?;
    Ok(Json([]))
}

#[derive(Deserialize)]
pub struct UserQuery {
    userid: Option<String>,
}

/// # `GET /_matrix/client/v3/thirdparty/user?userid=`
/// <https://spec.matrix.org/v1.16/client-server-api/#get_matrixclientv3thirdpartyuser>
pub async fn users(
    _auth: Auth,
    MatrixQuery(query): MatrixQuery<UserQuery>,
) -> ApiResult<Json<[(); 0]>> {
    query
        .userid
        .ok_or_else(|| ApiError::new(ErrorKind::MissingParam, "userid is required"))?;
    Ok(Json([]))
}
