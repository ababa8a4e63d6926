//! The Server-Server API: what other Matrix servers call. Served on the
//! federation TLS listener and, when federation is on, on the main
//! listener too (for a TLS proxy in front).

mod auth;
mod keys;
mod media;
mod query;
mod transactions;
mod version;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;

use crate::api::error::{ApiError, ApiResult};
use crate::service::error::ErrorKind;
use crate::service::federation::FederationService;
use crate::service::Services;

/// The federation and key routes.
pub fn routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/_matrix/key/v2/server", get(keys::server_keys))
        .route("/_matrix/key/v2/query", post(keys::query_batch))
        .route("/_matrix/key/v2/query/{server_name}", get(keys::query_one))
        .route("/_matrix/federation/v1/version", get(version::version))
        .route("/_matrix/federation/v1/query/profile", get(query::profile))
        .route(
            "/_matrix/federation/v1/query/directory",
            get(query::directory),
        )
        .route(
            "/_matrix/federation/v1/media/download/{media_id}",
            get(media::download),
        )
        .route(
            "/_matrix/federation/v1/media/thumbnail/{media_id}",
            get(media::thumbnail),
        )
        .route(
            "/_matrix/federation/v1/publicRooms",
            get(query::public_rooms).post(query::public_rooms_post),
        )
        .route(
            "/_matrix/federation/v1/send/{txn_id}",
            put(transactions::send),
        )
        .route("/.well-known/matrix/server", get(version::well_known))
}

/// The federation service, which exists whenever these routes are served.
fn federation(services: &Services) -> ApiResult<&FederationService> {
    services
        .federation
        .as_deref()
        .ok_or_else(|| ApiError::new(ErrorKind::Unrecognized, "This server does not federate"))
}
