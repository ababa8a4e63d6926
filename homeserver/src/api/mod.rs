//! The HTTP layer: the Matrix Client-Server API routes, one file per spec area.

mod account;
mod account_data;
mod deactivate;
mod devices;
mod directory;
pub mod error;
mod events;
pub mod extract;
pub mod federation;
mod keys;
mod media;
mod openid;
mod presence;
mod profile;
mod profile_fields;
mod push_rules;
mod pushers;
mod receipts;
mod relations;
mod reports;
mod room_keys;
mod rooms;
mod sse;
mod state;
mod static_files;
mod sync;
mod tags;
mod thirdparty;
mod threepid;
pub mod tls;
mod typing;
mod user_directory;
mod versions;
mod voip;

#[cfg(test)]
mod client_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod e2ee_tests;
#[cfg(test)]
mod media_tests;
#[cfg(test)]
mod push_rules_tests;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use serde::Serialize;
use tower_http::cors::{Any, CorsLayer};

use crate::service::error::ErrorKind;
use crate::service::Services;
use error::ApiError;

/// The answer of the endpoints that answer `{}`.
#[derive(Serialize)]
pub struct EmptyResponse {}

/// Routes under `/_matrix/client/{v3,r0}`.
fn client_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/register", post(account::register))
        .route("/register/available", get(account::register_available))
        .route("/login", get(account::login_flows).post(account::login))
        .route("/logout", post(account::logout))
        .route("/logout/all", post(account::logout_all))
        .route("/account/whoami", get(account::whoami))
        .route("/account/password", post(account::change_password))
        .route("/profile/{user_id}", get(profile::get_profile))
        .route(
            "/profile/{user_id}/{key_name}",
            get(profile_fields::get)
                .put(profile_fields::put)
                .delete(profile_fields::delete),
        )
        .route("/account/deactivate", post(deactivate::deactivate))
        .route("/capabilities", get(versions::capabilities))
        .route("/createRoom", post(rooms::create_room))
        .route("/join/{room_id_or_alias}", post(rooms::join))
        .route("/joined_rooms", get(rooms::joined_rooms))
        .route("/rooms/{room_id}/join", post(rooms::join_by_id))
        .route("/rooms/{room_id}/invite", post(rooms::invite))
        .route("/rooms/{room_id}/leave", post(rooms::leave))
        .route("/rooms/{room_id}/forget", post(rooms::forget))
        .route("/rooms/{room_id}/kick", post(rooms::kick))
        .route("/rooms/{room_id}/ban", post(rooms::ban))
        .route("/rooms/{room_id}/unban", post(rooms::unban))
        .route("/rooms/{room_id}/members", get(rooms::members))
        .route(
            "/rooms/{room_id}/joined_members",
            get(rooms::joined_members),
        )
        .route("/rooms/{room_id}/state", get(state::get_state))
        .route(
            "/rooms/{room_id}/state/{event_type}",
            get(state::get_state_event_empty_key).put(state::put_state_event_empty_key),
        )
        .route(
            "/rooms/{room_id}/state/{event_type}/",
            get(state::get_state_event_empty_key).put(state::put_state_event_empty_key),
        )
        .route(
            "/rooms/{room_id}/state/{event_type}/{state_key}",
            get(state::get_state_event).put(state::put_state_event),
        )
        .route(
            "/rooms/{room_id}/send/{event_type}/{txn_id}",
            put(events::send),
        )
        .route("/rooms/{room_id}/typing/{user_id}", put(typing::set_typing))
        .route(
            "/presence/{user_id}/status",
            get(presence::get_status).put(presence::set_status),
        )
        .route(
            "/rooms/{room_id}/receipt/{receipt_type}/{event_id}",
            post(receipts::post_receipt),
        )
        .route(
            "/rooms/{room_id}/read_markers",
            post(receipts::read_markers),
        )
        .route(
            "/rooms/{room_id}/redact/{event_id}/{txn_id}",
            put(events::redact),
        )
        .route("/rooms/{room_id}/messages", get(events::messages))
        .route("/rooms/{room_id}/event/{event_id}", get(events::get_event))
        .route("/rooms/{room_id}/context/{event_id}", get(events::context))
        .route("/sync", get(sync::sync))
        .route("/user/{user_id}/filter", post(sync::create_filter))
        .route(
            "/user/{user_id}/openid/request_token",
            post(openid::request_token),
        )
        .route("/user/{user_id}/filter/{filter_id}", get(sync::get_filter))
        .route(
            "/user/{user_id}/account_data/{event_type}",
            get(account_data::get_global).put(account_data::put_global),
        )
        .route(
            "/user/{user_id}/rooms/{room_id}/account_data/{event_type}",
            get(account_data::get_room).put(account_data::put_room),
        )
        .route("/user/{user_id}/rooms/{room_id}/tags", get(tags::list))
        .route(
            "/user/{user_id}/rooms/{room_id}/tags/{tag}",
            put(tags::put).delete(tags::delete),
        )
        .route("/rooms/{room_id}/report/{event_id}", post(reports::event))
        .route("/rooms/{room_id}/report", post(reports::room))
        .route("/users/{user_id}/report", post(reports::user))
        .route(
            "/directory/list/room/{room_id}",
            get(directory::get_listing).put(directory::put_listing),
        )
        .route("/voip/turnServer", get(voip::turn_server))
        .route("/user_directory/search", post(user_directory::search))
        .merge(e2ee_routes())
        .merge(unbridged_routes())
        .route("/pushers", get(pushers::get_pushers))
        .route("/notifications", get(pushers::get_notifications))
        .route("/pushers/set", post(pushers::set_pusher))
        .route("/pushrules", get(push_rules::get_all))
        .route("/pushrules/", get(push_rules::get_all))
        .route("/pushrules/global", get(push_rules::get_global))
        .route("/pushrules/global/", get(push_rules::get_global))
        .route(
            "/pushrules/global/{kind}/{rule_id}",
            get(push_rules::get_rule)
                .put(push_rules::put_rule)
                .delete(push_rules::delete_rule),
        )
        .route(
            "/pushrules/global/{kind}/{rule_id}/enabled",
            get(push_rules::get_enabled).put(push_rules::put_enabled),
        )
        .route(
            "/pushrules/global/{kind}/{rule_id}/actions",
            get(push_rules::get_actions).put(push_rules::put_actions),
        )
        .route(
            "/directory/room/{alias}",
            get(directory::get_alias)
                .put(directory::put_alias)
                .delete(directory::delete_alias),
        )
        .route("/rooms/{room_id}/aliases", get(directory::room_aliases))
        .route(
            "/publicRooms",
            get(directory::public_rooms).post(directory::public_rooms_post),
        )
}

/// Routes that only exist under `/_matrix/client/v1` (media has its own).
fn v1_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/mutual_rooms", get(rooms::mutual_rooms))
        .route(
            "/rooms/{room_id}/timestamp_to_event",
            get(events::timestamp_to_event),
        )
        .route(
            "/rooms/{room_id}/relations/{event_id}",
            get(relations::relations),
        )
        .route(
            "/rooms/{room_id}/relations/{event_id}/{rel_type}",
            get(relations::relations_by_type),
        )
        .route(
            "/rooms/{room_id}/relations/{event_id}/{rel_type}/{event_type}",
            get(relations::relations_by_type_and_event_type),
        )
        .route("/rooms/{room_id}/threads", get(relations::threads))
}

/// Third-party ids and networks, which need services this server does not
/// run (mail, SMS, identity servers, bridges): clear refusals and empty
/// lists.
fn unbridged_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/account/3pid", get(threepid::list))
        .route("/account/3pid/add", post(threepid::add))
        .route("/account/3pid/bind", post(threepid::bind))
        .route("/account/3pid/delete", post(threepid::delete))
        .route("/account/3pid/unbind", post(threepid::delete))
        .route(
            "/account/3pid/email/requestToken",
            post(threepid::email_token),
        )
        .route(
            "/account/3pid/msisdn/requestToken",
            post(threepid::msisdn_token),
        )
        .route("/register/email/requestToken", post(threepid::email_token))
        .route(
            "/register/msisdn/requestToken",
            post(threepid::msisdn_token),
        )
        .route(
            "/account/password/email/requestToken",
            post(threepid::email_token),
        )
        .route(
            "/account/password/msisdn/requestToken",
            post(threepid::msisdn_token),
        )
        .route("/thirdparty/protocols", get(thirdparty::protocols))
        .route("/thirdparty/protocol/{protocol}", get(thirdparty::protocol))
        .route("/thirdparty/location", get(thirdparty::locations))
        .route("/thirdparty/location/{protocol}", get(thirdparty::protocol))
        .route("/thirdparty/user", get(thirdparty::users))
        .route("/thirdparty/user/{protocol}", get(thirdparty::protocol))
}

/// Devices, keys, to-device messages and key backups.
fn e2ee_routes() -> Router<Arc<Services>> {
    Router::new()
        .route("/devices", get(devices::list))
        .route(
            "/devices/{device_id}",
            get(devices::get)
                .put(devices::rename)
                .delete(devices::delete),
        )
        .route("/delete_devices", post(devices::delete_many))
        .route("/keys/upload", post(keys::upload))
        .route("/keys/query", post(keys::query))
        .route("/keys/claim", post(keys::claim))
        .route("/keys/changes", get(keys::changes))
        .route(
            "/keys/device_signing/upload",
            post(keys::upload_cross_signing),
        )
        .route("/keys/signatures/upload", post(keys::upload_signatures))
        .route(
            "/sendToDevice/{event_type}/{txn_id}",
            put(keys::send_to_device),
        )
        .route(
            "/room_keys/version",
            get(room_keys::current_version).post(room_keys::create_version),
        )
        .route(
            "/room_keys/version/{version}",
            get(room_keys::get_version)
                .put(room_keys::update_version)
                .delete(room_keys::delete_version),
        )
        .route(
            "/room_keys/keys",
            get(room_keys::get_all)
                .put(room_keys::put_all)
                .delete(room_keys::delete_all),
        )
        .route(
            "/room_keys/keys/{room_id}",
            get(room_keys::get_room)
                .put(room_keys::put_room)
                .delete(room_keys::delete_room),
        )
        .route(
            "/room_keys/keys/{room_id}/{session_id}",
            get(room_keys::get_session)
                .put(room_keys::put_session)
                .delete(room_keys::delete_session),
        )
}

/// The whole application.
pub fn router(services: Arc<Services>) -> Router {
    let client = client_routes();
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT]);
    let limit = services.config.max_request_bytes;
    // Federation answers here too when it is on, for a TLS proxy in front.
    let federation = match services.federation {
        Some(_) => federation::routes(),
        None => Router::new(),
    };
    Router::new()
        .route("/_matrix/client/versions", get(versions::versions))
        .route("/.well-known/matrix/client", get(versions::well_known))
        .route("/.well-known/matrix/support", get(versions::support))
        .nest("/_matrix/client/v1", v1_routes())
        .route(
            "/_matrix/client/unstable/tern/rooms/{room_id}/receipts/{event_id}",
            get(receipts::message_info),
        )
        .route(
            "/_matrix/client/unstable/org.matrix.msc2108/sync/stream",
            get(sse::sync_stream),
        )
        .route("/_matrix/client/unstable/tern/sync/ack", post(sse::ack))
        .route("/", get(static_files::index))
        .route("/_tern/{name}", get(static_files::spec_file))
        .nest("/_matrix/client/v3", client.clone())
        .nest("/_matrix/client/r0", client)
        // Media bodies stream past `max_request_bytes` (it only binds the
        // buffering extractors); `media.max_upload_bytes` limits them instead.
        .merge(media::routes(services.config.media.legacy_endpoints))
        .merge(federation)
        .fallback(unrecognized)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(cors)
        .with_state(services)
}

/// What the federation TLS listener serves: the Server-Server API only.
pub fn federation_router(services: Arc<Services>) -> Router {
    let limit = services.config.max_request_bytes;
    federation::routes()
        .fallback(|| async { ApiError::new(ErrorKind::Unrecognized, "Unrecognized request") })
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .with_state(services)
}

/// Unknown paths: a web client file if there is one by that name (GET
/// only, never under the API prefixes), else the spec's `M_UNRECOGNIZED`.
async fn unrecognized(
    method: Method,
    uri: axum::http::Uri,
    headers: axum::http::HeaderMap,
) -> Response {
    let path = uri.path();
    let api = path.starts_with("/_matrix/") || path.starts_with("/_tern/");
    if method == Method::GET && !api {
        if let Some(file) = static_files::client_file(path, &headers) {
            return file;
        }
    }
    ApiError::new(ErrorKind::Unrecognized, "Unrecognized request").into_response()
}

async fn method_not_allowed() -> (axum::http::StatusCode, ApiError) {
    (
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        ApiError::new(
            ErrorKind::Unrecognized,
            "Method not allowed on this endpoint",
        ),
    )
}
