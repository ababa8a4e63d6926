//! The media repository: uploads (direct and reserved with `create`),
//! downloads and cached thumbnails of media owned by this server.
//!
//! Bytes stream from the request into the [`MediaStore`] through a tally that
//! counts, hashes and enforces `max_upload_bytes` on the way, so no upload is
//! ever held in memory whole. Metadata is recorded only after the bytes are
//! stored, so a record never points at missing content. Thumbnails are made
//! once per (media, size, method, animation), on the blocking pool, a few at a
//! time, and kept in the media store beside the content. Media of other
//! servers is fetched over federation on first use and kept the same way
//! (`remote.rs`), so each piece crosses the network once.

pub mod disposition;
mod remote;
pub mod thumbnail;

use parking_lot::Mutex;
use ruma_common::{OwnedServerName, ServerName, UserId};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use rand::distributions::{Alphanumeric, DistString};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::error::{ErrorKind, ServiceError, ServiceResult};
use super::federation::FederationService;
use super::rooms::now_ms;
use crate::store::media::{
    ByteStream, MediaMetadataStore, MediaObject, MediaRecord, MediaStore, UploadedContent,
};
use crate::store::StoreError;
use disposition::{content_disposition, is_valid_content_type, DEFAULT_CONTENT_TYPE};
use thumbnail::{Method, Output, Spec, ThumbnailError};

/// Length of generated media ids (alphanumeric: URL and path safe).
const MEDIA_ID_LEN: usize = 32;
/// How long a `create` reservation waits for its upload.
const PENDING_TTL_MS: i64 = 24 * 60 * 60 * 1000;
/// Open reservations one user may hold.
const MAX_PENDING_PER_USER: u64 = 50;
/// Longest a download waits for a reserved upload to arrive.
const MAX_WAIT_MS: u64 = 20_000;
/// Largest source file we load to make a thumbnail.
const MAX_THUMBNAIL_SOURCE_BYTES: u64 = 32 * 1024 * 1024;
/// Thumbnails decoded at once; decoding is CPU- and memory-heavy.
const THUMBNAIL_WORKERS: usize = 2;

/// An upload on its way in.
pub struct Upload {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    /// `Content-Length`, when the client sent one.
    pub declared_len: Option<u64>,
    pub body: ByteStream,
}

/// How the bytes of a download reach the client.
pub enum MediaBody {
    Stream(MediaObject),
    /// Fetch them from this short-lived URL instead.
    Redirect(String),
}

/// A download or thumbnail, with what the client needs to present it.
pub struct MediaContent {
    pub content_type: String,
    pub content_disposition: String,
    pub body: MediaBody,
}

/// A thumbnail request.
#[derive(Debug, Clone, Copy)]
pub struct ThumbnailRequest {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub animated: bool,
}

pub struct MediaService {
    store: Arc<dyn MediaStore>,
    metadata: Arc<dyn MediaMetadataStore>,
    server_name: OwnedServerName,
    max_upload_bytes: u64,
    thumbnail_workers: Semaphore,
    /// Fetches other servers' media; `None` when not federating.
    federation: Option<Arc<FederationService>>,
    /// One fetch at a time per remote media (striped by key).
    remote_fetches: remote::FetchLocks,
    shutdown: CancellationToken,
}

/// What flowed through an upload stream.
#[derive(Default)]
struct Tally {
    len: u64,
    hasher: Sha256,
    too_large: bool,
    client_failed: bool,
}

/// `mxc://{server}/{media_id}`.
pub fn mxc_uri(server_name: &ServerName, media_id: &str) -> String {
    format!("mxc://{server_name}/{media_id}")
}

/// Whether `media_id` could have been made by a server: `[A-Za-z0-9_-]`, at
/// most 255 characters. This is also what keeps it from escaping a path.
pub fn is_valid_media_id(media_id: &str) -> bool {
    !media_id.is_empty()
        && media_id.len() <= 255
        && media_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn content_key(media_id: &str) -> String {
    format!("content/{media_id}")
}

/// Where the thumbnails of local media live.
fn thumbnail_prefix(media_id: &str) -> String {
    format!("thumbnail/{media_id}")
}

fn thumbnail_key(prefix: &str, spec: &Spec) -> String {
    format!(
        "{prefix}/{}x{}-{}.{}",
        spec.width,
        spec.height,
        spec.method.as_str(),
        spec.output.extension()
    )
}

fn too_large(limit: u64) -> ServiceError {
    ServiceError::new(
        ErrorKind::TooLarge,
        format!("Uploads are limited to {limit} bytes"),
    )
}

fn bytes_stream(bytes: Vec<u8>) -> MediaObject {
    MediaObject {
        len: bytes.len() as u64,
        body: futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed(),
    }
}

impl MediaService {
    pub fn new(
        store: Arc<dyn MediaStore>,
        metadata: Arc<dyn MediaMetadataStore>,
        server_name: OwnedServerName,
        max_upload_bytes: u64,
        federation: Option<Arc<FederationService>>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            store,
            metadata,
            server_name,
            max_upload_bytes,
            thumbnail_workers: Semaphore::new(THUMBNAIL_WORKERS),
            federation,
            remote_fetches: remote::FetchLocks::default(),
            shutdown,
        }
    }

    pub fn max_upload_bytes(&self) -> u64 {
        self.max_upload_bytes
    }

    fn check_upload(&self, upload: &Upload) -> ServiceResult<()> {
        if upload
            .declared_len
            .is_some_and(|len| len > self.max_upload_bytes)
        {
            return Err(too_large(self.max_upload_bytes));
        }
        if let Some(content_type) = &upload.content_type {
            if !is_valid_content_type(content_type) {
                return Err(ServiceError::invalid_param("Invalid Content-Type"));
            }
        }
        if let Some(name) = &upload.filename {
            if name.len() > 255 || name.chars().any(char::is_control) {
                return Err(ServiceError::invalid_param("Invalid filename"));
            }
        }
        Ok(())
    }

    /// Streams an upload into the store under `content/{media_id}`, counting,
    /// hashing and enforcing the size limit as it goes.
    async fn store_content(
        &self,
        media_id: &str,
        upload: Upload,
    ) -> ServiceResult<UploadedContent> {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let limit = self.max_upload_bytes;
        let counted = {
            let tally = tally.clone();
            upload.body.map(move |chunk| {
                let mut tally = tally.lock();
                let chunk = chunk.inspect_err(|_| tally.client_failed = true)?;
                tally.len += chunk.len() as u64;
                if tally.len > limit {
                    tally.too_large = true;
                    return Err(io::Error::other("upload is past the size limit"));
                }
                tally.hasher.update(&chunk);
                Ok(chunk)
            })
        };
        let stored = self
            .store
            .put(&content_key(media_id), counted.boxed())
            .await;
        let tally = std::mem::take(&mut *tally.lock());
        match stored {
            Ok(_) => Ok(UploadedContent {
                content_type: upload.content_type,
                filename: upload.filename,
                size: tally.len,
                sha256: format!("{:x}", tally.hasher.finalize()),
            }),
            Err(_) if tally.too_large => Err(too_large(limit)),
            Err(_) if tally.client_failed => {
                Err(ServiceError::invalid_param("Could not read the upload"))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `POST /upload`: stores the bytes and returns the new `mxc://` URI.
    pub async fn upload(&self, uploader: &UserId, upload: Upload) -> ServiceResult<String> {
        self.check_upload(&upload)?;
        let media_id = Alphanumeric.sample_string(&mut rand::thread_rng(), MEDIA_ID_LEN);
        let content = self.store_content(&media_id, upload).await?;
        self.metadata
            .insert_media(&MediaRecord {
                media_id: media_id.clone(),
                uploader: uploader.to_string(),
                content_type: content.content_type,
                filename: content.filename,
                size: Some(content.size),
                sha256: Some(content.sha256),
                created_ts: now_ms(),
                pending_until_ts: None,
            })
            .await?;
        Ok(mxc_uri(&self.server_name, &media_id))
    }

    /// `POST /create`: reserves a media id for a later upload. Returns the
    /// `mxc://` URI and when the reservation expires (ms since the epoch).
    pub async fn create_pending(&self, uploader: &UserId) -> ServiceResult<(String, i64)> {
        let now = now_ms();
        // Reservations are rare; sweeping the expired ones here needs no task.
        let expired = self.metadata.delete_expired_media(now).await?;
        if expired > 0 {
            tracing::debug!(expired, "forgot expired media reservations");
        }
        if self
            .metadata
            .count_pending_media(uploader.as_str(), now)
            .await?
            >= MAX_PENDING_PER_USER
        {
            return Err(ServiceError::new(
                ErrorKind::LimitExceeded {
                    retry_after_ms: 60_000,
                },
                "Too many pending uploads",
            ));
        }
        let media_id = Alphanumeric.sample_string(&mut rand::thread_rng(), MEDIA_ID_LEN);
        let expires = now + PENDING_TTL_MS;
        self.metadata
            .insert_media(&MediaRecord {
                media_id: media_id.clone(),
                uploader: uploader.to_string(),
                content_type: None,
                filename: None,
                size: None,
                sha256: None,
                created_ts: now,
                pending_until_ts: Some(expires),
            })
            .await?;
        Ok((mxc_uri(&self.server_name, &media_id), expires))
    }

    /// `PUT /upload/{serverName}/{mediaId}`: fills a reservation of `uploader`.
    pub async fn upload_pending(
        &self,
        uploader: &UserId,
        server_name: &ServerName,
        media_id: &str,
        upload: Upload,
    ) -> ServiceResult<()> {
        self.check_upload(&upload)?;
        let record = self.local_record(server_name, media_id).await?;
        if record.uploader != uploader.as_str() {
            return Err(ServiceError::forbidden(
                "This media id was reserved by another user",
            ));
        }
        match record.pending_until_ts {
            None => {
                return Err(ServiceError::new(
                    ErrorKind::CannotOverwriteMedia,
                    "Media has already been uploaded",
                ))
            }
            Some(until) if until <= now_ms() => {
                return Err(ServiceError::not_found("The reservation has expired"))
            }
            Some(_) => {}
        }
        let content = self.store_content(media_id, upload).await?;
        if !self.metadata.complete_media(media_id, &content).await? {
            return Err(ServiceError::new(
                ErrorKind::CannotOverwriteMedia,
                "Media has already been uploaded",
            ));
        }
        Ok(())
    }

    /// The record of local media, or `M_NOT_FOUND` (remote media included:
    /// this server does not federate).
    async fn local_record(
        &self,
        server_name: &ServerName,
        media_id: &str,
    ) -> ServiceResult<MediaRecord> {
        if !is_valid_media_id(media_id) {
            return Err(ServiceError::invalid_param("Invalid media id"));
        }
        if server_name != self.server_name {
            return Err(ServiceError::not_found("Media not found"));
        }
        self.metadata
            .get_media(media_id)
            .await?
            .ok_or_else(|| ServiceError::not_found("Media not found"))
    }

    /// The record once its content is there, waiting up to `timeout_ms` for a
    /// reserved upload; `M_NOT_YET_UPLOADED` after that.
    async fn uploaded_record(
        &self,
        server_name: &ServerName,
        media_id: &str,
        timeout_ms: Option<u64>,
    ) -> ServiceResult<MediaRecord> {
        let wait = Duration::from_millis(timeout_ms.unwrap_or(MAX_WAIT_MS).min(MAX_WAIT_MS));
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let record = self.local_record(server_name, media_id).await?;
            match record.pending_until_ts {
                None => return Ok(record),
                Some(until) if until <= now_ms() => {
                    return Err(ServiceError::not_found("Media not found"))
                }
                Some(_) => {}
            }
            if tokio::time::Instant::now() >= deadline || self.shutdown.is_cancelled() {
                return Err(ServiceError::new(
                    ErrorKind::NotYetUploaded,
                    "Media has not been uploaded yet",
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = self.shutdown.cancelled() => {}
            }
        }
    }

    /// The content of local media. `file_name` overrides the stored name;
    /// `allow_redirect` lets an object store hand out a presigned URL.
    pub async fn download(
        &self,
        server_name: &ServerName,
        media_id: &str,
        file_name: Option<&str>,
        timeout_ms: Option<u64>,
        allow_redirect: bool,
    ) -> ServiceResult<MediaContent> {
        if server_name != self.server_name {
            return self.remote_download(server_name, media_id, file_name).await;
        }
        let record = self
            .uploaded_record(server_name, media_id, timeout_ms)
            .await?;
        let content_type = record
            .content_type
            .filter(|t| is_valid_content_type(t))
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
        let filename = file_name.map(str::to_owned).or(record.filename);
        let content_disposition = content_disposition(&content_type, filename.as_deref());
        let key = content_key(media_id);
        if allow_redirect {
            if let Some(url) = self
                .store
                .presigned_download(&key, &content_type, &content_disposition)
                .await?
            {
                return Ok(MediaContent {
                    content_type,
                    content_disposition,
                    body: MediaBody::Redirect(url),
                });
            }
        }
        let object = self.store.get(&key).await?.ok_or_else(|| {
            tracing::warn!(media_id, "media has a record but no content");
            ServiceError::not_found("Media not found")
        })?;
        Ok(MediaContent {
            content_type,
            content_disposition,
            body: MediaBody::Stream(object),
        })
    }

    /// A thumbnail of local media, made on first request and cached.
    pub async fn thumbnail(
        &self,
        server_name: &ServerName,
        media_id: &str,
        request: ThumbnailRequest,
        timeout_ms: Option<u64>,
    ) -> ServiceResult<MediaContent> {
        if request.width == 0 || request.height == 0 {
            return Err(ServiceError::invalid_param(
                "width and height must be positive",
            ));
        }
        let (source_type, source_key, prefix) = if server_name == self.server_name {
            let record = self
                .uploaded_record(server_name, media_id, timeout_ms)
                .await?;
            let key = content_key(media_id);
            (record.content_type, key, thumbnail_prefix(media_id))
        } else {
            let remote = self.remote(server_name, media_id).await?;
            let keys = remote::RemoteKeys::new(server_name, media_id);
            (remote.content_type, keys.content, keys.thumbnails)
        };
        let source_type = source_type.unwrap_or_default().to_ascii_lowercase();
        let output = Output::for_source(&source_type, request.animated)
            .ok_or_else(|| ServiceError::not_found("No thumbnail for this media type"))?;
        let (width, height) = thumbnail::snap_size(request.width, request.height);
        let spec = Spec {
            width,
            height,
            method: request.method,
            output,
        };
        let key = thumbnail_key(&prefix, &spec);
        let object = match self.store.get(&key).await? {
            Some(cached) => cached,
            None => self.make_thumbnail(&source_key, &key, spec).await?,
        };
        let content_type = output.content_type().to_owned();
        Ok(MediaContent {
            content_disposition: content_disposition(&content_type, None),
            content_type,
            body: MediaBody::Stream(object),
        })
    }

    async fn make_thumbnail(
        &self,
        source_key: &str,
        key: &str,
        spec: Spec,
    ) -> ServiceResult<MediaObject> {
        let media_id = source_key;
        let source = self
            .store
            .get(source_key)
            .await?
            .ok_or_else(|| ServiceError::not_found("Media not found"))?;
        if source.len > MAX_THUMBNAIL_SOURCE_BYTES {
            return Err(ServiceError::new(
                ErrorKind::TooLarge,
                "Media is too large to thumbnail",
            ));
        }
        let _permit = self
            .thumbnail_workers
            .acquire()
            .await
            .map_err(ServiceError::internal)?;
        let chunks: Vec<Bytes> = source
            .body
            .try_collect()
            .await
            .map_err(|e| ServiceError::from(StoreError::io("reading the upload", e)))?;
        let bytes = chunks.concat();
        let made = tokio::task::spawn_blocking(move || thumbnail::generate(&bytes, spec))
            .await
            .map_err(ServiceError::internal)?;
        let thumbnail = match made {
            Ok(thumbnail) => thumbnail,
            Err(e @ ThumbnailError::TooLarge(..)) => {
                return Err(ServiceError::new(ErrorKind::TooLarge, e.to_string()))
            }
            Err(e @ ThumbnailError::Unsupported(_)) => {
                tracing::debug!(media_id, error = %e, "no thumbnail");
                return Err(ServiceError::not_found(
                    "Cannot make a thumbnail of this media",
                ));
            }
        };
        let cached = bytes_stream(thumbnail.clone());
        if let Err(e) = self.store.put(key, cached.body).await {
            tracing::warn!(media_id, error = %e, "caching a thumbnail failed");
        }
        Ok(bytes_stream(thumbnail))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_cannot_escape() {
        assert!(is_valid_media_id("abcDEF123_-"));
        for bad in ["", "..", "a/b", "a\\b", "a%2Fb", "a.b", &"x".repeat(256)] {
            assert!(!is_valid_media_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn thumbnail_keys_name_the_variant() {
        let spec = Spec {
            width: 32,
            height: 32,
            method: Method::Crop,
            output: Output::Png,
        };
        assert_eq!(
            thumbnail_key(&thumbnail_prefix("abc"), &spec),
            "thumbnail/abc/32x32-crop.png"
        );
    }
}
