//! Our media for other servers: `/_matrix/federation/v1/media/{download,
//! thumbnail}/{mediaId}`, answered as `multipart/mixed` (metadata, then the
//! bytes) as the authenticated media spec has it.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::Response;
use futures::TryStreamExt;
use ruma_common::api::OutgoingResponseExt;
use ruma_common::http_headers::ContentDisposition;
use ruma_federation_api::authenticated_media::{
    get_content, Content, ContentMetadata, FileOrLocation,
};

use super::auth::{NoBody, Signed};
use crate::api::error::ApiResult;
use crate::api::extract::{MatrixPath, MatrixQuery};
use crate::api::media::{parse_method, ThumbnailQuery};
use crate::service::error::ServiceError;
use crate::service::media::{MediaBody, MediaContent, ThumbnailRequest};
use crate::service::Services;

/// # `GET /_matrix/federation/v1/media/download/{mediaId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediadownloadmediaid>
pub async fn download(
    State(services): State<Arc<Services>>,
    MatrixPath(media_id): MatrixPath<String>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Response> {
    tracing::debug!(%origin, media_id, "media download over federation");
    let ours = &services.config.server_name;
    let content = services
        .media
        .download(ours, &media_id, None, None, false)
        .await?;
    multipart(content).await
}

/// # `GET /_matrix/federation/v1/media/thumbnail/{mediaId}`
/// <https://spec.matrix.org/v1.16/server-server-api/#get_matrixfederationv1mediathumbnailmediaid>
pub async fn thumbnail(
    State(services): State<Arc<Services>>,
    MatrixPath(media_id): MatrixPath<String>,
    MatrixQuery(query): MatrixQuery<ThumbnailQuery>,
    Signed {
        origin,
        body: NoBody {},
    }: Signed<NoBody>,
) -> ApiResult<Response> {
    tracing::debug!(%origin, media_id, "thumbnail over federation");
    let method = parse_method(query.method.as_deref())?;
    let request = ThumbnailRequest {
        width: query.width,
        height: query.height,
        method,
        animated: query.animated,
    };
    let ours = &services.config.server_name;
    let content = services
        .media
        .thumbnail(ours, &media_id, request, None)
        .await?;
    multipart(content).await
}

/// The `multipart/mixed` answer: empty metadata, then the file with its
/// type and disposition. The bytes are read whole first (ruma's encoder
/// takes a buffer); uploads are capped by `max_upload_bytes`.
async fn multipart(content: MediaContent) -> ApiResult<Response> {
    let MediaBody::Stream(object) = content.body else {
        return Err(ServiceError::internal("a redirect where bytes were asked for").into());
    };
    let chunks: Vec<bytes::Bytes> = object
        .body
        .try_collect()
        .await
        .map_err(ServiceError::internal)?;
    let disposition: ContentDisposition = content
        .content_disposition
        .parse()
        .map_err(ServiceError::internal)?;
    let file = Content::new(chunks.concat(), content.content_type, disposition);
    let answer = get_content::v1::Response::new(ContentMetadata::new(), FileOrLocation::File(file));
    let http = answer
        .try_into_http_response::<Vec<u8>>()
        .map_err(ServiceError::internal)?;
    Ok(http.map(Body::from))
}
