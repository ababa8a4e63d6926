//! Media storage: the bytes of uploads and thumbnails ([`MediaStore`]) and
//! their metadata ([`MediaMetadataStore`]).
//!
//! Bytes and metadata are separate seams because they scale separately: the
//! bytes go to the local filesystem (default) or an S3-compatible object store
//! (feature `s3`), the metadata stays in the relational engine with the rest.
//! Both traits stream: an upload is handed over as a stream of chunks and a
//! download comes back as one, so no file is ever held in memory whole.

use std::io;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;

use super::StoreResult;
use crate::config::media::MediaBackend;
use crate::config::Config;

pub mod fs;
#[cfg(feature = "s3")]
pub mod s3;

#[cfg(test)]
pub mod conformance;

/// A stream of chunks, for uploads and downloads alike. An `Err` item aborts an
/// upload: nothing of it becomes visible.
pub type ByteStream = BoxStream<'static, io::Result<Bytes>>;

/// A stored object on its way out.
pub struct MediaObject {
    /// Length in bytes.
    pub len: u64,
    pub body: ByteStream,
}

/// The bytes of media, by key. Keys are `/`-separated relative paths made of
/// `[A-Za-z0-9._-]` segments (see [`is_valid_key`]); the service builds them.
#[async_trait]
pub trait MediaStore: Send + Sync {
    /// Stores `body` under `key`, replacing any object there. The object
    /// becomes visible whole or not at all: if the stream fails, or the
    /// process dies midway, readers never see part of it. Returns the length.
    async fn put(&self, key: &str, body: ByteStream) -> StoreResult<u64>;

    /// The object under `key`, or `None`.
    async fn get(&self, key: &str) -> StoreResult<Option<MediaObject>>;

    /// Removes the object under `key`; absent objects are not an error.
    async fn delete(&self, key: &str) -> StoreResult<()>;

    /// A short-lived URL a client can fetch the object from directly, with the
    /// given response headers, when the engine supports it and is configured
    /// to hand them out.
    async fn presigned_download(
        &self,
        _key: &str,
        _content_type: &str,
        _content_disposition: &str,
    ) -> StoreResult<Option<String>> {
        Ok(None)
    }
}

/// What the server knows about one piece of media it owns.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaRecord {
    pub media_id: String,
    pub uploader: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: Option<u64>,
    /// Lower-case hex SHA-256 of the content.
    pub sha256: Option<String>,
    pub created_ts: i64,
    /// Reserved by `POST /create` and not yet uploaded: expires at this time.
    pub pending_until_ts: Option<i64>,
}

/// The content fields that an upload fills in.
#[derive(Debug, Clone, PartialEq)]
pub struct UploadedContent {
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub sha256: String,
}

/// Metadata of local media.
#[async_trait]
pub trait MediaMetadataStore: Send + Sync {
    /// Records new media (pending or complete); `StoreError::Conflict` if the
    /// id exists.
    async fn insert_media(&self, record: &MediaRecord) -> StoreResult<()>;

    /// Fills in a pending record. Returns false (and changes nothing) unless
    /// the record exists and is still pending.
    async fn complete_media(&self, media_id: &str, content: &UploadedContent) -> StoreResult<bool>;

    async fn get_media(&self, media_id: &str) -> StoreResult<Option<MediaRecord>>;

    /// Pending reservations of `uploader` that have not expired at `now_ts`.
    async fn count_pending_media(&self, uploader: &str, now_ts: i64) -> StoreResult<u64>;

    /// Forgets reservations that expired by `now_ts` without an upload;
    /// returns how many.
    async fn delete_expired_media(&self, now_ts: i64) -> StoreResult<u64>;
}

/// Opens the media engine the configuration names.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn MediaStore>> {
    match config.media.backend {
        MediaBackend::Fs => {
            let root = config
                .media
                .path
                .clone()
                .unwrap_or_else(|| config.data_dir.join("media"));
            Ok(Arc::new(fs::FsMediaStore::open(&root).await?))
        }
        #[cfg(feature = "s3")]
        MediaBackend::S3 => {
            let s3 = config
                .media
                .s3
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("media.backend = \"s3\" needs [media.s3]"))?;
            Ok(Arc::new(s3::S3MediaStore::open(s3).await?))
        }
        #[cfg(not(feature = "s3"))]
        MediaBackend::S3 => {
            anyhow::bail!("media.backend = \"s3\" needs a build with the `s3` cargo feature")
        }
    }
}

/// Whether `key` is a relative path of `[A-Za-z0-9._-]` segments with no
/// empty, `.` or `..` segment: engines map keys to paths and URLs verbatim.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|segment| {
            !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        })
}

#[cfg(test)]
mod tests {
    use super::is_valid_key;

    #[test]
    fn keys_cannot_escape() {
        assert!(is_valid_key("content/abc_DEF-1"));
        assert!(is_valid_key("thumbnail/abc/32x32-crop.png"));
        for bad in [
            "", "/abs", "a//b", "../x", "a/../b", "a/./b", "a\\b", "a b", "a/", "%2e%2e",
        ] {
            assert!(!is_valid_key(bad), "{bad:?} accepted");
        }
    }
}
