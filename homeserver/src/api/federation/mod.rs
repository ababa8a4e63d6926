//! The Server-Server API: what other Matrix servers call. Served on the
//! federation TLS listener and, when federation is on, on the main
//! listener too (for a TLS proxy in front).

mod auth;
mod history;
mod keys;
mod media;
mod membership;
mod openid;
mod query;
mod transactions;
mod user_keys;
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
        .route(
            "/_matrix/federation/v1/make_join/{room_id}/{user_id}",
            get(membership::make_join),
        )
        .route(
            "/_matrix/federation/v2/send_join/{room_id}/{event_id}",
            put(membership::send_join),
        )
        .route(
            "/_matrix/federation/v1/make_leave/{room_id}/{user_id}",
            get(membership::make_leave),
        )
        .route(
            "/_matrix/federation/v2/send_leave/{room_id}/{event_id}",
            put(membership::send_leave),
        )
        .route(
            "/_matrix/federation/v2/invite/{room_id}/{event_id}",
            put(membership::invite),
        )
        .route(
            "/_matrix/federation/v1/event/{event_id}",
            get(history::event),
        )
        .route(
            "/_matrix/federation/v1/state/{room_id}",
            get(history::state),
        )
        .route(
            "/_matrix/federation/v1/state_ids/{room_id}",
            get(history::state_ids),
        )
        .route(
            "/_matrix/federation/v1/event_auth/{room_id}/{event_id}",
            get(history::event_auth),
        )
        .route(
            "/_matrix/federation/v1/backfill/{room_id}",
            get(history::backfill),
        )
        .route(
            "/_matrix/federation/v1/get_missing_events/{room_id}",
            post(history::get_missing_events),
        )
        .route(
            "/_matrix/federation/v1/openid/userinfo",
            get(openid::userinfo),
        )
        .route(
            "/_matrix/federation/v1/user/keys/query",
            post(user_keys::query),
        )
        .route(
            "/_matrix/federation/v1/user/keys/claim",
            post(user_keys::claim),
        )
        .route(
            "/_matrix/federation/v1/user/devices/{user_id}",
            get(user_keys::devices),
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
