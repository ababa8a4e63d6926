//! `GET /_matrix/federation/v1/version` and `GET /.well-known/matrix/server`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::OwnedServerName;
use serde::Serialize;

use crate::api::error::{ApiError, ApiResult};
use crate::service::error::ErrorKind;
use crate::service::Services;

#[derive(Serialize)]
pub struct VersionResponse {
    server: ServerSoftware,
}

#[derive(Serialize)]
struct ServerSoftware {
    name: &'static str,
    version: &'static str,
}

/// # `GET /_matrix/federation/v1/version`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1version>
pub async fn version() -> Json<VersionResponse> {
    Json(VersionResponse {
        server: ServerSoftware {
            name: "Tern",
            version: env!("CARGO_PKG_VERSION"),
        },
    })
}

#[derive(Serialize)]
pub struct WellKnownServer {
    #[serde(rename = "m.server")]
    server: OwnedServerName,
}

/// # `GET /.well-known/matrix/server`
/// <https://spec.matrix.org/v1.16/server-server-api/#getwell-knownmatrixserver>
///
/// Served only when `well_known_server` is configured: a server without
/// delegation answers 404, which tells others to use its name as it is.
pub async fn well_known(State(services): State<Arc<Services>>) -> ApiResult<Json<WellKnownServer>> {
    services
        .config
        .federation
        .well_known_server
        .clone()
        .map(|server| Json(WellKnownServer { server }))
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "No delegation is configured"))
}
