//! Router tests of the media routes: the whole app in-process on the embedded
//! backends, driven with `oneshot`.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::config::media::MediaConfig;
use crate::config::Config;

async fn app(max_upload_bytes: u64) -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        data_dir: dir.path().to_owned(),
        allow_registration: true,
        disable_rate_limits: true,
        media: MediaConfig {
            max_upload_bytes,
            ..MediaConfig::default()
        },
        ..Config::default()
    };
    let (services, _) = crate::build_services(config, CancellationToken::new())
        .await
        .unwrap();
    let app = super::router(services).layer(MockConnectInfo(SocketAddr::from(([127, 0, 0, 1], 1))));
    (dir, app)
}

async fn send(app: &Router, request: Request<Body>) -> (Response, Vec<u8>) {
    let response = app.clone().oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, Body::empty()), bytes)
}

fn json_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap_or(Value::Null)
}

async fn register(app: &Router) -> String {
    let body = json!({"username": "alice", "password": "pw", "auth": {"type": "m.login.dummy"}});
    let request = Request::post("/_matrix/client/v3/register")
        .body(Body::from(body.to_string()))
        .unwrap();
    let (_, bytes) = send(app, request).await;
    json_of(&bytes)["access_token"].as_str().unwrap().to_owned()
}

fn upload(token: &str, bytes: Vec<u8>, content_type: &str, query: &str) -> Request<Body> {
    Request::post(format!("/_matrix/media/v3/upload{query}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .body(Body::from(bytes))
        .unwrap()
}

#[tokio::test]
async fn upload_then_download_with_safe_headers() {
    let (_dir, app) = app(2 * 1024 * 1024).await;
    let token = register(&app).await;
    // Bigger than `max_request_bytes` (1 MiB): media has its own limit.
    let page = [
        b"<script>alert(1)</script>".as_slice(),
        &vec![b' '; 1_500_000],
    ]
    .concat();
    let (response, bytes) = send(
        &app,
        upload(&token, page.clone(), "text/html", "?filename=a%20b.html"),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK, "{}", json_of(&bytes));
    let uri = json_of(&bytes)["content_uri"].as_str().unwrap().to_owned();
    let path = uri.strip_prefix("mxc://").unwrap();

    let request = Request::get(format!("/_matrix/client/v1/media/download/{path}"))
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let (response, bytes) = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(bytes, page);
    let headers = response.headers();
    assert_eq!(headers[header::CONTENT_TYPE], "text/html");
    assert_eq!(
        headers[header::CONTENT_DISPOSITION],
        "attachment; filename*=utf-8''a%20b.html"
    );
    assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(
        headers[header::CONTENT_SECURITY_POLICY],
        super::media::CONTENT_SECURITY_POLICY
    );

    // Unauthenticated: refused on the v1 route, served on the legacy one.
    let request = Request::get(format!("/_matrix/client/v1/media/download/{path}"))
        .body(Body::empty())
        .unwrap();
    let (response, bytes) = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(json_of(&bytes)["errcode"], "M_MISSING_TOKEN");
    let request = Request::get(format!("/_matrix/media/v3/download/{path}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.0.status(), StatusCode::OK);
}

#[tokio::test]
async fn too_large_and_unknown() {
    let (dir, app) = app(1000).await;
    let token = register(&app).await;
    let (response, bytes) = send(
        &app,
        upload(&token, vec![0; 1001], "application/octet-stream", ""),
    )
    .await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(&bytes)["errcode"], "M_TOO_LARGE");

    // No Content-Length: refused while streaming, and nothing is kept.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..4).map(|_| Ok(vec![1u8; 400])).collect();
    let request = Request::post("/_matrix/media/v3/upload")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::from_stream(futures::stream::iter(chunks)))
        .unwrap();
    let (response, bytes) = send(&app, request).await;
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(json_of(&bytes)["errcode"], "M_TOO_LARGE");
    let content = dir.path().join("media/objects/content");
    assert_eq!(
        std::fs::read_dir(content).map(|d| d.count()).unwrap_or(0),
        0
    );

    for (path, status, code) in [
        (
            "localhost/unknownMediaId",
            StatusCode::NOT_FOUND,
            "M_NOT_FOUND",
        ),
        ("localhost/..", StatusCode::BAD_REQUEST, "M_INVALID_PARAM"),
        (
            "localhost/a%2F..%2F..%2Ftern.db",
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
        ),
    ] {
        let request = Request::get(format!("/_matrix/client/v1/media/download/{path}"))
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let (response, bytes) = send(&app, request).await;
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(json_of(&bytes)["errcode"], code, "{path}");
    }
}
