//! Router tests: the whole app in-process on the embedded backend, driven
//! with `oneshot` requests (no sockets).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::Config;

pub(super) async fn app() -> (tempfile::TempDir, Router) {
    app_with(Config::default()).await
}

/// The app on `config`, with a fresh data directory and registration open.
pub(super) async fn app_with(config: Config) -> (tempfile::TempDir, Router) {
    let (dir, _, app) = app_and_services(config).await;
    (dir, app)
}

/// [`app_with`], and the services behind it for what no route shows.
pub(super) async fn app_and_services(
    config: Config,
) -> (
    tempfile::TempDir,
    std::sync::Arc<crate::service::Services>,
    Router,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        allow_registration: true,
        disable_rate_limits: true,
        ..config
    };
    let (services, _) = crate::build_services(config, CancellationToken::new())
        .await
        .unwrap();
    let app = super::router(services.clone())
        .layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
    (dir, services, app)
}

pub(super) async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Body::from(body.unwrap_or("").to_owned()))
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// A JSON request to `/_matrix/client/v3{path}` with `token`.
async fn v3(
    app: &Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let body = body.map(|b| b.to_string());
    call(
        app,
        method,
        &format!("/_matrix/client/v3{path}"),
        token,
        body.as_deref(),
    )
    .await
}

pub(super) async fn get(app: &Router, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    v3(app, "GET", path, token, None).await
}

pub(super) async fn post(
    app: &Router,
    path: &str,
    token: &str,
    body: Value,
) -> (StatusCode, Value) {
    v3(app, "POST", path, Some(token), Some(body)).await
}

pub(super) async fn put(app: &Router, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
    v3(app, "PUT", path, Some(token), Some(body)).await
}

pub(super) async fn register(app: &Router, name: &str) -> String {
    let body =
        json!({"username": name, "password": "pw", "auth": {"type": "m.login.dummy"}}).to_string();
    let (status, json) = call(
        app,
        "POST",
        "/_matrix/client/v3/register",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    json["access_token"].as_str().unwrap().to_owned()
}

/// `base_url` of `/.well-known/matrix/client` asked for with `host`.
async fn well_known_base_url(app: &Router, host: &str) -> String {
    let request = Request::builder()
        .uri("/.well-known/matrix/client")
        .header("host", host)
        .body(Body::empty())
        .unwrap();
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let json: Value = serde_json::from_slice(&bytes).unwrap();
    json["m.homeserver"]["base_url"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn well_known_announces_the_configured_url_or_a_plain_host() {
    let (_dir, app) = app().await;
    assert_eq!(
        well_known_base_url(&app, "chat.example:8448").await,
        "http://chat.example:8448"
    );
    // Not a host[:port]: the listen address, never the header's text.
    assert_eq!(
        well_known_base_url(&app, "evil.example/phish?x=1").await,
        "http://127.0.0.1:8008"
    );
    let (_dir, app) = app_with(Config {
        public_base_url: Some("https://matrix.example.org".into()),
        ..Config::default()
    })
    .await;
    assert_eq!(
        well_known_base_url(&app, "chat.example:8448").await,
        "https://matrix.example.org"
    );
}

#[tokio::test]
async fn versions_and_unknown_endpoints() {
    let (_dir, app) = app().await;
    let (status, json) = call(&app, "GET", "/_matrix/client/versions", None, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v == "v1.11"));
    let (status, json) = call(&app, "GET", "/_matrix/client/v3/nope", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(json["errcode"], "M_UNRECOGNIZED");
    let (status, json) = call(&app, "DELETE", "/_matrix/client/v3/sync", None, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(json["errcode"], "M_UNRECOGNIZED");
}

#[tokio::test]
async fn bad_bodies_get_matrix_errors() {
    let (_dir, app) = app().await;
    let token = register(&app, "alice").await;
    let (status, json) = call(
        &app,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        Some("{nope"),
    )
    .await;
    assert_eq!(
        (status, json["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_NOT_JSON"))
    );
    let (status, json) = call(
        &app,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        Some(r#"{"invite": 5}"#),
    )
    .await;
    assert_eq!(
        (status, json["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_BAD_JSON"))
    );
    let (status, json) = call(&app, "GET", "/_matrix/client/v3/joined_rooms", None, None).await;
    assert_eq!(
        (status, json["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN"))
    );
    let (status, json) = call(
        &app,
        "GET",
        "/_matrix/client/v3/joined_rooms",
        Some("bogus"),
        None,
    )
    .await;
    assert_eq!(
        (status, json["errcode"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("M_UNKNOWN_TOKEN"))
    );
    let (status, json) = call(
        &app,
        "GET",
        "/_matrix/client/v3/rooms/notaroom/messages",
        Some(&token),
        None,
    )
    .await;
    assert_eq!(
        (status, json["errcode"].as_str()),
        (StatusCode::BAD_REQUEST, Some("M_INVALID_PARAM"))
    );
    let big = format!(r#"{{"body": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let (status, json) = call(
        &app,
        "PUT",
        "/_matrix/client/v3/rooms/!a:localhost/send/m.room.message/t1",
        Some(&token),
        Some(&big),
    )
    .await;
    assert_eq!(
        (status, json["errcode"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("M_TOO_LARGE"))
    );
}

#[tokio::test]
async fn send_is_idempotent_and_history_pages() {
    let (_dir, app) = app().await;
    let token = register(&app, "alice").await;
    let (_, json) = call(
        &app,
        "POST",
        "/_matrix/client/v3/createRoom",
        Some(&token),
        Some("{}"),
    )
    .await;
    let room = json["room_id"].as_str().unwrap().to_owned();
    let send = |txn: &str| format!("/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let body = r#"{"msgtype": "m.text", "body": "hello"}"#;
    let (_, first) = call(&app, "PUT", &send("t1"), Some(&token), Some(body)).await;
    let (_, again) = call(&app, "PUT", &send("t1"), Some(&token), Some(body)).await;
    assert_eq!(first["event_id"], again["event_id"]);
    let (_, other) = call(&app, "PUT", &send("t2"), Some(&token), Some(body)).await;
    assert_ne!(first["event_id"], other["event_id"]);

    let uri = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=2");
    let (status, page) = call(&app, "GET", &uri, Some(&token), None).await;
    assert_eq!(status, StatusCode::OK);
    let chunk = page["chunk"].as_array().unwrap();
    assert_eq!(chunk.len(), 2);
    assert_eq!(chunk[0]["event_id"], other["event_id"]);
    assert_eq!(chunk[1]["event_id"], first["event_id"]);
    assert_eq!(chunk[1]["unsigned"]["transaction_id"], "t1");
    // Paging on reaches the room's creation and then stops.
    let mut from = page["end"].as_str().unwrap().to_owned();
    let mut kinds = Vec::new();
    loop {
        let uri = format!("/_matrix/client/v3/rooms/{room}/messages?dir=b&limit=3&from={from}");
        let (_, page) = call(&app, "GET", &uri, Some(&token), None).await;
        kinds.extend(
            page["chunk"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["type"].as_str().unwrap().to_owned()),
        );
        match page["end"].as_str() {
            Some(end) => from = end.to_owned(),
            None => break,
        }
    }
    assert_eq!(kinds.last().map(String::as_str), Some("m.room.create"));
    assert_eq!(kinds.iter().filter(|k| *k == "m.room.message").count(), 0);
}
