//! Files compiled into the binary: the web client (`web-client/dist`, built
//! and committed, served at `/`) and the API description (`api-spec/`,
//! served at `/_tern/openapi.yaml` with a Redoc page at `/_tern/docs`).
//! Nothing is fetched from elsewhere at run time.

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::{EmbeddedFile, RustEmbed};

use super::error::ApiError;
use crate::service::error::ErrorKind;

#[derive(RustEmbed)]
#[folder = "../web-client/dist"]
#[allow_missing = true]
struct WebClient;

#[derive(RustEmbed)]
#[folder = "../api-spec"]
#[include = "openapi.yaml"]
#[include = "docs.html"]
#[include = "vendor/*"]
#[allow_missing = true]
struct ApiSpec;

/// The web client's pages: scripts, styles and connections only from here,
/// images also from blob URLs (thumbnails fetched with the access token).
const CLIENT_CSP: &str = "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; \
     style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn not_found() -> Response {
    ApiError::new(ErrorKind::NotFound, "No such file").into_response()
}

/// One file, with its type, an ETag (its SHA-256) and `no-cache`: names are
/// stable across builds, so browsers revalidate rather than keep old code.
fn serve(file: EmbeddedFile, name: &str, request: &HeaderMap, csp: Option<&str>) -> Response {
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let mut headers = HeaderMap::new();
    let mime = file.metadata.mimetype();
    let mime = if name.ends_with(".yaml") {
        "application/yaml"
    } else {
        mime
    };
    if let Ok(value) = HeaderValue::from_str(mime) {
        headers.insert(header::CONTENT_TYPE, value);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Access tokens can sit in URLs (EventSource): never leak them onward.
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Some(csp) = csp {
        if let Ok(value) = HeaderValue::from_str(csp) {
            headers.insert(header::CONTENT_SECURITY_POLICY, value);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, value);
    }
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (headers, file.data.into_owned()).into_response()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// # `GET /`
pub async fn index(headers: HeaderMap) -> Response {
    match WebClient::get("index.html") {
        Some(file) => serve(file, "index.html", &headers, Some(CLIENT_CSP)),
        None => not_found(),
    }
}

/// A file of the web client outside `/_matrix` and `/_tern` (assets, icons),
/// or `None` when there is none by that name.
pub fn client_file(path: &str, headers: &HeaderMap) -> Option<Response> {
    let name = path.trim_start_matches('/');
    if name.is_empty() || name.contains("..") {
        return None;
    }
    WebClient::get(name).map(|file| serve(file, name, headers, Some(CLIENT_CSP)))
}

/// # `GET /_tern/openapi.yaml`, `/_tern/docs`, `/_tern/redoc.standalone.js`
pub async fn spec_file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    let stored = match name.as_str() {
        "openapi.yaml" => "openapi.yaml",
        "docs" => "docs.html",
        "redoc.standalone.js" => "vendor/redoc.standalone.js",
        _ => return not_found(),
    };
    match ApiSpec::get(stored) {
        Some(file) => serve(file, stored, &headers, None),
        None => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spec_is_compiled_in() {
        let spec = ApiSpec::get("openapi.yaml").expect("api-spec/openapi.yaml embedded");
        let text = String::from_utf8_lossy(&spec.data);
        assert!(text.starts_with("openapi: 3.1") || text.contains("\nopenapi: 3.1"));
    }

    #[test]
    fn paths_outside_the_client_are_refused() {
        let headers = HeaderMap::new();
        assert!(client_file("/../Cargo.toml", &headers).is_none());
        assert!(client_file("/", &headers).is_none());
    }
}
