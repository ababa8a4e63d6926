//! Helpers of the media tests: which engines to run on, starting a server
//! with a `[media]` config, raw requests with headers, and test images.

use std::io::Cursor;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tern_tests::{enc, require_env, Client, ServerOptions, TestServer};

pub const CSP: &str =
    "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; \
                   style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";
pub const MEDIA_V1: &str = "/_matrix/client/v1/media";

/// One engine to run a test on: its name and the `[media.s3]` part of the config.
pub struct Backend {
    pub name: &'static str,
    pub s3_toml: Option<String>,
}

/// The filesystem engine and S3 (at `TERN_TEST_S3_ENDPOINT`; the tests
/// fail without it).
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend {
        name: "fs",
        s3_toml: None,
    }];
    let endpoint = require_env(
        "TERN_TEST_S3_ENDPOINT",
        "an S3 server for the S3 media engine (scripts/test.sh starts moto)",
    );
    static BUCKETS: AtomicU32 = AtomicU32::new(0);
    let bucket = format!(
        "tern-test-{}-{}",
        std::process::id(),
        BUCKETS.fetch_add(1, Ordering::Relaxed)
    );
    backends.push(Backend {
        name: "s3",
        s3_toml: Some(format!(
            "backend = \"s3\"\n[media.s3]\nbucket = \"{bucket}\"\nendpoint = \"{endpoint}\"\n\
             access_key_id = \"test\"\nsecret_access_key = \"test\"\npath_style = true\n\
             create_bucket = true\n"
        )),
    });
    backends
}

/// Starts a server on `backend` with extra `[media]` keys.
pub async fn start(backend: &Backend, media_keys: &str) -> TestServer {
    let toml = format!(
        "[media]\n{media_keys}\n{}",
        backend.s3_toml.as_deref().unwrap_or("")
    );
    TestServer::start_with(ServerOptions {
        config_toml: Some(toml),
        ..ServerOptions::default()
    })
    .await
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// A request with the client's token (if any); returns the raw response.
pub async fn send(
    server: &TestServer,
    client: Option<&Client>,
    method: Method,
    path: &str,
    body: Option<(Vec<u8>, &str)>,
) -> reqwest::Response {
    let mut req = http().request(method, format!("{}{path}", server.base_url()));
    if let Some(token) = client.and_then(|c| c.access_token.as_deref()) {
        req = req.bearer_auth(token);
    }
    if let Some((bytes, content_type)) = body {
        req = req.header(CONTENT_TYPE, content_type).body(bytes);
    }
    req.send().await.expect("request")
}

pub async fn json_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Uploads and returns the `mxc://` URI.
pub async fn upload(
    server: &TestServer,
    client: &Client,
    bytes: &[u8],
    content_type: &str,
    filename: Option<&str>,
) -> String {
    let path = match filename {
        Some(name) => format!("/_matrix/media/v3/upload?filename={}", enc(name)),
        None => "/_matrix/media/v3/upload".to_owned(),
    };
    let resp = send(
        server,
        Some(client),
        Method::POST,
        &path,
        Some((bytes.to_vec(), content_type)),
    )
    .await;
    let (status, body) = json_of(resp).await;
    assert_eq!(status, 200, "upload: {body}");
    body["content_uri"]
        .as_str()
        .expect("content_uri")
        .to_owned()
}

/// `(server_name, media_id)` of an `mxc://` URI.
pub fn parse_mxc(uri: &str) -> (String, String) {
    let rest = uri.strip_prefix("mxc://").expect("mxc:// URI");
    let (server, id) = rest.split_once('/').expect("server/id");
    (server.to_owned(), id.to_owned())
}

pub async fn download(
    server: &TestServer,
    client: Option<&Client>,
    uri: &str,
) -> reqwest::Response {
    let (server_name, media_id) = parse_mxc(uri);
    let path = format!("{MEDIA_V1}/download/{server_name}/{media_id}");
    send(server, client, Method::GET, &path, None).await
}

pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = RgbaImage::from_fn(width, height, |x, y| {
        Rgba([x as u8 * 4, y as u8 * 4, 90, 255])
    });
    let mut out = Vec::new();
    DynamicImage::ImageRgba8(image)
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .unwrap();
    out
}

pub fn jpeg(width: u32, height: u32) -> Vec<u8> {
    let image = DynamicImage::ImageRgba8(RgbaImage::from_pixel(
        width,
        height,
        Rgba([9, 99, 199, 255]),
    ));
    let mut out = Vec::new();
    DynamicImage::ImageRgb8(image.to_rgb8())
        .write_to(&mut Cursor::new(&mut out), ImageFormat::Jpeg)
        .unwrap();
    out
}

pub fn animated_gif(width: u32, height: u32) -> Vec<u8> {
    use image::codecs::gif::{GifEncoder, Repeat};
    use image::{Delay, Frame};
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).unwrap();
        for shade in [0u8, 200] {
            let frame = RgbaImage::from_pixel(width, height, Rgba([shade, 50, 50, 255]));
            let delay = Delay::from_numer_denom_ms(100, 1);
            encoder
                .encode_frame(Frame::from_parts(frame, 0, 0, delay))
                .unwrap();
        }
    }
    out
}

pub async fn thumbnail(
    server: &TestServer,
    client: &Client,
    uri: &str,
    query: &str,
) -> reqwest::Response {
    let (server_name, media_id) = parse_mxc(uri);
    let path = format!("{MEDIA_V1}/thumbnail/{server_name}/{media_id}?{query}");
    send(server, Some(client), Method::GET, &path, None).await
}

pub async fn thumbnail_image(
    server: &TestServer,
    client: &Client,
    uri: &str,
    query: &str,
) -> (String, DynamicImage) {
    let resp = thumbnail(server, client, uri, query).await;
    assert_eq!(resp.status(), StatusCode::OK, "thumbnail {query}");
    let content_type = header(&resp, "content-type").to_owned();
    let bytes = resp.bytes().await.unwrap();
    (
        content_type,
        image::load_from_memory(&bytes).expect("thumbnail decodes"),
    )
}
