//! Server discovery: versions, well-known and capabilities.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use super::extract::Auth;
use crate::service::pdu::ROOM_VERSION;
use crate::service::Services;

/// # `GET /_matrix/client/versions`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientversions>
pub async fn versions() -> Json<Value> {
    Json(json!({
        "versions": ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
                     "v1.9", "v1.10", "v1.11"],
        "unstable_features": {}
    }))
}

/// # `GET /.well-known/matrix/client`
/// <https://spec.matrix.org/v1.11/client-server-api/#getwell-knownmatrixclient>
pub async fn well_known(State(services): State<Arc<Services>>, headers: HeaderMap) -> Json<Value> {
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
    Json(json!({"m.homeserver": {"base_url": base_url}}))
}

/// # `GET /_matrix/client/v3/capabilities`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv3capabilities>
pub async fn capabilities(_auth: Auth) -> Json<Value> {
    Json(json!({
        "capabilities": {
            "m.change_password": {"enabled": true},
            "m.room_versions": {"default": ROOM_VERSION, "available": {ROOM_VERSION: "stable"}},
            "m.set_displayname": {"enabled": true},
            "m.set_avatar_url": {"enabled": true},
            "m.3pid_changes": {"enabled": false}
        }
    }))
}
