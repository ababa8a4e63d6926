//! The key server and notary: `/_matrix/key/v2/server` and
//! `/_matrix/key/v2/query`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use ruma_common::{CanonicalJsonObject, OwnedServerName, OwnedServerSigningKeyId};
use serde::{Deserialize, Serialize};

use super::federation;
use crate::api::error::ApiResult;
use crate::api::extract::{MatrixJson, MatrixPath, MatrixQuery};
use crate::service::federation::keys::now_ms;
use crate::service::Services;

/// # `GET /_matrix/key/v2/server`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixkeyv2server>
pub async fn server_keys(
    State(services): State<Arc<Services>>,
) -> ApiResult<Json<CanonicalJsonObject>> {
    Ok(Json(federation(&services)?.keys.own_document()))
}

#[derive(Serialize)]
pub struct NotaryResponse {
    server_keys: Vec<CanonicalJsonObject>,
}

#[derive(Deserialize)]
pub struct MinimumValid {
    #[serde(default)]
    minimum_valid_until_ts: Option<u64>,
}

/// # `GET /_matrix/key/v2/query/{serverName}`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixkeyv2queryservername>
pub async fn query_one(
    State(services): State<Arc<Services>>,
    MatrixPath(server): MatrixPath<OwnedServerName>,
    MatrixQuery(query): MatrixQuery<MinimumValid>,
) -> ApiResult<Json<NotaryResponse>> {
    let min = query.minimum_valid_until_ts.unwrap_or_else(now_ms);
    let criteria = BTreeMap::from([(server, ())]);
    Ok(Json(notarize(&services, criteria, min).await?))
}

#[derive(Deserialize)]
pub struct BatchQuery {
    server_keys: BTreeMap<OwnedServerName, BTreeMap<OwnedServerSigningKeyId, MinimumValid>>,
}

/// Servers a notary answers for in one request, at most.
const MAX_NOTARY_SERVERS: usize = 100;

/// # `POST /_matrix/key/v2/query`
/// <https://spec.matrix.org/v1.16/server-server-api/#post_matrixkeyv2query>
pub async fn query_batch(
    State(services): State<Arc<Services>>,
    MatrixJson(query): MatrixJson<BatchQuery>,
) -> ApiResult<Json<NotaryResponse>> {
    if query.server_keys.len() > MAX_NOTARY_SERVERS {
        return Err(crate::api::error::ApiError::new(
            crate::service::error::ErrorKind::TooLarge,
            format!("At most {MAX_NOTARY_SERVERS} servers per query"),
        ));
    }
    let min = query
        .server_keys
        .values()
        .flat_map(|keys| keys.values().filter_map(|k| k.minimum_valid_until_ts))
        .max()
        .unwrap_or_else(now_ms);
    Ok(Json(notarize(&services, query.server_keys, min).await?))
}

/// Each server's key document as its server gave it, with our signature
/// added. A server we cannot reach is left out, as the spec allows.
async fn notarize<K>(
    services: &Services,
    servers: BTreeMap<OwnedServerName, K>,
    min_valid_ms: u64,
) -> ApiResult<NotaryResponse> {
    let federation = federation(services)?;
    let lookups = servers.keys().map(|server| async move {
        match federation
            .keys
            .document(&federation.client, server, min_valid_ms)
            .await
        {
            Ok(mut document) => {
                federation.keys.sign(&mut document);
                Some(document)
            }
            Err(err) => {
                tracing::info!(%server, error = %err, "notary could not fetch keys");
                None
            }
        }
    });
    let server_keys = futures::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
        .collect();
    Ok(NotaryResponse { server_keys })
}
