//! Server discovery: versions, well-known and capabilities.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use super::error::{ApiError, ApiResult};
use super::extract::Auth;
use crate::config::client::SupportConfig;
use crate::service::error::ErrorKind;
use crate::service::pdu::ROOM_VERSION;
use crate::service::Services;

/// # `GET /_matrix/client/versions`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientversions>
pub async fn versions() -> Json<VersionsResponse> {
    Json(VersionsResponse {
        versions: &[
            "r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
            "v1.10", "v1.11",
        ],
        // Cross-signing works (`/keys/device_signing/upload`,
        // `/keys/signatures/upload`): clients from before its stable
        // release look for this flag.
        unstable_features: BTreeMap::from([("org.matrix.e2e_cross_signing", true)]),
    })
}

#[derive(Serialize)]
pub struct VersionsResponse {
    pub versions: &'static [&'static str],
    pub unstable_features: BTreeMap<&'static str, bool>,
}

/// # `GET /.well-known/matrix/client`
/// <https://spec.matrix.org/v1.11/client-server-api/#getwell-knownmatrixclient>
pub async fn well_known(
    State(services): State<Arc<Services>>,
    headers: HeaderMap,
) -> Json<WellKnownResponse> {
    let base_url = match &services.config.public_base_url {
        Some(url) => url.clone(),
        // Unset (one machine, the embedded default): where the client found
        // us, if the Host header is a plain host[:port], else our address.
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
                })
                .map(str::to_owned)
                .unwrap_or_else(|| services.config.listen.to_string());
            format!("http://{host}")
        }
    };
    Json(WellKnownResponse {
        homeserver: BaseUrl { base_url },
    })
}

#[derive(Serialize)]
pub struct WellKnownResponse {
    #[serde(rename = "m.homeserver")]
    pub homeserver: BaseUrl,
}

#[derive(Serialize)]
pub struct BaseUrl {
    pub base_url: String,
}

/// # `GET /_matrix/client/v3/capabilities`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3capabilities>
pub async fn capabilities(_auth: Auth) -> Json<CapabilitiesResponse> {
    let enabled = |enabled| Enabled { enabled };
    Json(CapabilitiesResponse {
        capabilities: Capabilities {
            change_password: enabled(true),
            room_versions: RoomVersions {
                default: ROOM_VERSION,
                available: BTreeMap::from([(ROOM_VERSION, "stable")]),
            },
            set_displayname: enabled(true),
            set_avatar_url: enabled(true),
            third_party_id_changes: enabled(false),
        },
    })
}

#[derive(Serialize)]
pub struct CapabilitiesResponse {
    pub capabilities: Capabilities,
}

#[derive(Serialize)]
pub struct Capabilities {
    #[serde(rename = "m.change_password")]
    pub change_password: Enabled,
    #[serde(rename = "m.room_versions")]
    pub room_versions: RoomVersions,
    #[serde(rename = "m.set_displayname")]
    pub set_displayname: Enabled,
    #[serde(rename = "m.set_avatar_url")]
    pub set_avatar_url: Enabled,
    #[serde(rename = "m.3pid_changes")]
    pub third_party_id_changes: Enabled,
}

#[derive(Serialize)]
pub struct Enabled {
    pub enabled: bool,
}

#[derive(Serialize)]
pub struct RoomVersions {
    pub default: &'static str,
    pub available: BTreeMap<&'static str, &'static str>,
}

/// # `GET /.well-known/matrix/support`
/// <https://spec.matrix.org/v1.16/client-server-api/#getwell-knownmatrixsupport>
///
/// 404 unless `[support]` is configured, as the spec asks.
pub async fn support(State(services): State<Arc<Services>>) -> ApiResult<Json<SupportConfig>> {
    services
        .config
        .support
        .clone()
        .map(Json)
        .ok_or_else(|| ApiError::new(ErrorKind::NotFound, "No support information is configured"))
}
