//! The media repository's routes: uploads (`/_matrix/media/v3/upload`,
//! `/_matrix/media/v1/create`), authenticated downloads and thumbnails
//! (`/_matrix/client/v1/media/...`) and the legacy unauthenticated ones
//! (`/_matrix/media/v3/{download,thumbnail}`, switchable off).
//!
//! Request bodies are streamed to the service, so these routes ignore the API's
//! `max_request_bytes` and have their own `media.max_upload_bytes`. Every
//! download carries headers that keep a browser from running uploaded content
//! as part of our origin.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures::TryStreamExt;
use ruma_common::OwnedServerName;
use serde::{Deserialize, Serialize};

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixPath, MatrixQuery};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::media::thumbnail::Method;
use crate::service::media::{MediaBody, MediaContent, ThumbnailRequest, Upload};
use crate::service::Services;

/// Synapse's policy for media: no scripts, no plugins but PDF, nothing loaded
/// from elsewhere; `sandbox` gives the document an opaque origin.
pub const CONTENT_SECURITY_POLICY: &str = "sandbox; default-src 'none'; script-src 'none'; \
     plugin-types application/pdf; style-src 'unsafe-inline'; media-src 'self'; object-src 'self';";

/// The media routes, to be merged into the application's router.
pub fn routes(legacy_endpoints: bool) -> Router<Arc<Services>> {
    let mut router = Router::new()
        .route("/_matrix/media/v3/upload", post(upload))
        .route(
            "/_matrix/media/v3/upload/{server_name}/{media_id}",
            put(upload_reserved),
        )
        .route("/_matrix/media/v1/create", post(create))
        .route("/_matrix/media/v3/config", get(config))
        .route("/_matrix/client/v1/media/config", get(config))
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}",
            get(download),
        )
        .route(
            "/_matrix/client/v1/media/download/{server_name}/{media_id}/{file_name}",
            get(download_as),
        )
        .route(
            "/_matrix/client/v1/media/thumbnail/{server_name}/{media_id}",
            get(thumbnail),
        );
    if legacy_endpoints {
        router = router
            .route(
                "/_matrix/media/v3/download/{server_name}/{media_id}",
                get(legacy_download),
            )
            .route(
                "/_matrix/media/v3/download/{server_name}/{media_id}/{file_name}",
                get(legacy_download_as),
            )
            .route(
                "/_matrix/media/v3/thumbnail/{server_name}/{media_id}",
                get(legacy_thumbnail),
            );
    }
    router
}

#[derive(Deserialize)]
pub struct UploadQuery {
    filename: Option<String>,
}

#[derive(Deserialize)]
pub struct DownloadQuery {
    timeout_ms: Option<u64>,
    #[serde(default)]
    allow_redirect: bool,
}

/// The query of a thumbnail request (the federation endpoint's too).
#[derive(Deserialize)]
pub struct ThumbnailQuery {
    pub(crate) width: u32,
    pub(crate) height: u32,
    pub(crate) method: Option<String>,
    #[serde(default)]
    pub(crate) animated: bool,
    pub(crate) timeout_ms: Option<u64>,
}

/// The upload in a request: its headers, and the body as a stream.
fn upload_from(headers: &HeaderMap, filename: Option<String>, body: Body) -> ApiResult<Upload> {
    let text = |name: header::HeaderName| -> ApiResult<Option<String>> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::new(ErrorKind::InvalidParam, format!("Invalid {name} header"))
                })
            })
            .transpose()
    };
    let declared_len = text(header::CONTENT_LENGTH)?
        .map(|v| v.trim().parse::<u64>())
        .transpose()
        .map_err(|_| ApiError::new(ErrorKind::InvalidParam, "Invalid Content-Length header"))?;
    Ok(Upload {
        content_type: text(header::CONTENT_TYPE)?,
        filename: filename.filter(|n| !n.is_empty()),
        declared_len,
        body: Box::pin(body.into_data_stream().map_err(std::io::Error::other)),
    })
}

pub(crate) fn parse_method(method: Option<&str>) -> ApiResult<Method> {
    match method.unwrap_or("scale") {
        "scale" => Ok(Method::Scale),
        "crop" => Ok(Method::Crop),
        _ => Err(ApiError::new(
            ErrorKind::InvalidParam,
            "method must be `scale` or `crop`",
        )),
    }
}

/// Headers every media response carries, redirects included.
fn safety_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    // Clients on other origins (web clients) must be able to embed media.
    headers.insert(
        header::HeaderName::from_static("cross-origin-resource-policy"),
        HeaderValue::from_static("cross-origin"),
    );
}

fn media_response(content: MediaContent) -> ApiResult<Response> {
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| {
            ApiError(crate::service::error::ServiceError::internal(format!(
                "media header value {text:?}"
            )))
        })
    };
    let mut response = match content.body {
        MediaBody::Redirect(url) => {
            let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
            response
                .headers_mut()
                .insert(header::LOCATION, value(&url)?);
            response
        }
        MediaBody::Stream(object) => {
            let mut response = Response::new(Body::from_stream(object.body));
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, value(&content.content_type)?);
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(object.len));
            headers.insert(
                header::CONTENT_DISPOSITION,
                value(&content.content_disposition)?,
            );
            // Media never changes once uploaded.
            headers.insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("private, max-age=86400, immutable"),
            );
            response
        }
    };
    safety_headers(response.headers_mut());
    Ok(response)
}

/// # `POST /_matrix/media/v3/upload`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixmediav3upload>
pub async fn upload(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<UploadResponse>> {
    let upload = upload_from(&headers, query.filename, body)?;
    let content_uri = services.media.upload(&auth.who.user_id, upload).await?;
    Ok(Json(UploadResponse {
        content_uri,
        unused_expires_at: None,
    }))
}

/// What `upload` and `create` answer (only `create` has an expiry).
#[derive(Serialize)]
pub struct UploadResponse {
    pub content_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unused_expires_at: Option<i64>,
}

/// # `POST /_matrix/media/v1/create`
/// <https://spec.matrix.org/v1.11/client-server-api/#post_matrixmediav1create>
pub async fn create(
    State(services): State<Arc<Services>>,
    auth: Auth,
) -> ApiResult<Json<UploadResponse>> {
    let (content_uri, expires) = services.media.create_pending(&auth.who.user_id).await?;
    Ok(Json(UploadResponse {
        content_uri,
        unused_expires_at: Some(expires),
    }))
}

/// # `PUT /_matrix/media/v3/upload/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#put_matrixmediav3uploadservernamemediaid>
pub async fn upload_reserved(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixPath((server_name, media_id)): MatrixPath<(OwnedServerName, String)>,
    MatrixQuery(query): MatrixQuery<UploadQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<EmptyResponse>> {
    let upload = upload_from(&headers, query.filename, body)?;
    services
        .media
        .upload_pending(&auth.who.user_id, &server_name, &media_id, upload)
        .await?;
    Ok(Json(EmptyResponse {}))
}

/// # `GET /_matrix/client/v1/media/config`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv1mediaconfig>
///
/// Also `GET /_matrix/media/v3/config`, its deprecated twin.
pub async fn config(State(services): State<Arc<Services>>, _auth: Auth) -> Json<ConfigResponse> {
    let upload_size = services.media.max_upload_bytes();
    Json(ConfigResponse { upload_size })
}

#[derive(Serialize)]
pub struct ConfigResponse {
    #[serde(rename = "m.upload.size")]
    pub upload_size: u64,
}

async fn serve_download(
    services: &Services,
    (server_name, media_id): (OwnedServerName, String),
    file_name: Option<String>,
    query: DownloadQuery,
) -> ApiResult<Response> {
    let content = services
        .media
        .download(
            &server_name,
            &media_id,
            file_name.as_deref(),
            query.timeout_ms,
            query.allow_redirect,
        )
        .await?;
    media_response(content)
}

async fn serve_thumbnail(
    services: &Services,
    (server_name, media_id): (OwnedServerName, String),
    query: ThumbnailQuery,
) -> ApiResult<Response> {
    let request = ThumbnailRequest {
        width: query.width,
        height: query.height,
        method: parse_method(query.method.as_deref())?,
        animated: query.animated,
    };
    let content = services
        .media
        .thumbnail(&server_name, &media_id, request, query.timeout_ms)
        .await?;
    media_response(content)
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv1mediadownloadservernamemediaid>
pub async fn download(
    State(services): State<Arc<Services>>,
    _auth: Auth,
    MatrixPath(path): MatrixPath<(OwnedServerName, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(&services, path, None, query).await
}

/// # `GET /_matrix/client/v1/media/download/{serverName}/{mediaId}/{fileName}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv1mediadownloadservernamemediaidfilename>
pub async fn download_as(
    State(services): State<Arc<Services>>,
    _auth: Auth,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(OwnedServerName, String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(&services, (server_name, media_id), Some(file_name), query).await
}

/// # `GET /_matrix/client/v1/media/thumbnail/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixclientv1mediathumbnailservernamemediaid>
pub async fn thumbnail(
    State(services): State<Arc<Services>>,
    _auth: Auth,
    MatrixPath(path): MatrixPath<(OwnedServerName, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> ApiResult<Response> {
    serve_thumbnail(&services, path, query).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixmediav3downloadservernamemediaid>
///
/// Deprecated and unauthenticated; off when `media.legacy_endpoints = false`.
pub async fn legacy_download(
    State(services): State<Arc<Services>>,
    MatrixPath(path): MatrixPath<(OwnedServerName, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(&services, path, None, query).await
}

/// # `GET /_matrix/media/v3/download/{serverName}/{mediaId}/{fileName}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixmediav3downloadservernamemediaidfilename>
///
/// Deprecated and unauthenticated; off when `media.legacy_endpoints = false`.
pub async fn legacy_download_as(
    State(services): State<Arc<Services>>,
    MatrixPath((server_name, media_id, file_name)): MatrixPath<(OwnedServerName, String, String)>,
    MatrixQuery(query): MatrixQuery<DownloadQuery>,
) -> ApiResult<Response> {
    serve_download(&services, (server_name, media_id), Some(file_name), query).await
}

/// # `GET /_matrix/media/v3/thumbnail/{serverName}/{mediaId}`
/// <https://spec.matrix.org/v1.11/client-server-api/#get_matrixmediav3thumbnailservernamemediaid>
///
/// Deprecated and unauthenticated; off when `media.legacy_endpoints = false`.
pub async fn legacy_thumbnail(
    State(services): State<Arc<Services>>,
    MatrixPath(path): MatrixPath<(OwnedServerName, String)>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
) -> ApiResult<Response> {
    serve_thumbnail(&services, path, query).await
}
