//! Media of other servers: fetched over federation the first time a client
//! asks, kept in the media store (content, then a small record of its type
//! and name, so a record always means the content is whole), and served
//! from there afterwards, also while the other server is down. Thumbnails
//! of remote media are made here from the cached original.

use std::hash::{Hash, Hasher};

use bytes::Bytes;
use ruma_common::ServerName;
use serde::{Deserialize, Serialize};

use super::disposition::{content_disposition, is_valid_content_type, DEFAULT_CONTENT_TYPE};
use super::{is_valid_media_id, MediaBody, MediaContent, MediaService};
use crate::service::error::{ServiceError, ServiceResult};
use crate::service::federation::not_federating;
use crate::store::media::ByteStream;

/// Remote fetches that may run at once for different media (by key hash);
/// two requests for the same media wait for one fetch.
const FETCH_STRIPES: usize = 64;

pub struct FetchLocks(Vec<tokio::sync::Mutex<()>>);

impl Default for FetchLocks {
    fn default() -> Self {
        Self(
            (0..FETCH_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        )
    }
}

impl FetchLocks {
    fn for_key(&self, key: &str) -> &tokio::sync::Mutex<()> {
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut hasher);
        &self.0[hasher.finish() as usize % self.0.len()]
    }
}

/// What we keep about a piece of remote media besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RemoteRecord {
    pub content_type: Option<String>,
    pub filename: Option<String>,
}

/// Where one piece of remote media lives in the media store. The server
/// name is hex-encoded: store keys allow no `:` (ports) or `[` (IPv6).
pub struct RemoteKeys {
    pub content: String,
    pub record: String,
    pub thumbnails: String,
}

impl RemoteKeys {
    pub fn new(server: &ServerName, media_id: &str) -> Self {
        let server: String = server
            .as_str()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let base = format!("remote/{server}/{media_id}");
        Self {
            content: format!("{base}/content"),
            record: format!("{base}.json"),
            thumbnails: format!("{base}/thumbnail"),
        }
    }
}

impl MediaService {
    /// A download of another server's media.
    pub(super) async fn remote_download(
        &self,
        server: &ServerName,
        media_id: &str,
        file_name: Option<&str>,
    ) -> ServiceResult<MediaContent> {
        let record = self.remote(server, media_id).await?;
        let content_type = record
            .content_type
            .filter(|t| is_valid_content_type(t))
            .unwrap_or_else(|| DEFAULT_CONTENT_TYPE.to_owned());
        let filename = file_name.map(str::to_owned).or(record.filename);
        let object = self
            .store
            .get(&RemoteKeys::new(server, media_id).content)
            .await?
            .ok_or_else(|| ServiceError::not_found("Media not found"))?;
        Ok(MediaContent {
            content_disposition: content_disposition(&content_type, filename.as_deref()),
            content_type,
            body: MediaBody::Stream(object),
        })
    }

    /// The record of remote media, fetching the media first if we do not
    /// have it yet.
    pub(super) async fn remote(
        &self,
        server: &ServerName,
        media_id: &str,
    ) -> ServiceResult<RemoteRecord> {
        if !is_valid_media_id(media_id) {
            return Err(ServiceError::invalid_param("Invalid media id"));
        }
        let keys = RemoteKeys::new(server, media_id);
        if let Some(record) = self.cached_record(&keys).await? {
            return Ok(record);
        }
        let _one_fetch = self.remote_fetches.for_key(&keys.content).lock().await;
        if let Some(record) = self.cached_record(&keys).await? {
            return Ok(record);
        }
        let federation = self.federation.as_ref().ok_or_else(not_federating)?;
        let fetched = federation
            .fetch_media(server, media_id, self.max_upload_bytes)
            .await?;
        let record = RemoteRecord {
            content_type: fetched.content_type,
            filename: fetched.filename,
        };
        self.store
            .put(&keys.content, once(Bytes::from(fetched.bytes)))
            .await?;
        let json = serde_json::to_vec(&record).map_err(ServiceError::internal)?;
        self.store
            .put(&keys.record, once(Bytes::from(json)))
            .await?;
        tracing::debug!(%server, media_id, "cached remote media");
        Ok(record)
    }

    async fn cached_record(&self, keys: &RemoteKeys) -> ServiceResult<Option<RemoteRecord>> {
        use futures::TryStreamExt;
        let Some(object) = self.store.get(&keys.record).await? else {
            return Ok(None);
        };
        let chunks: Vec<Bytes> = object.body.try_collect().await.map_err(|e| {
            ServiceError::from(crate::store::StoreError::io("reading a media record", e))
        })?;
        serde_json::from_slice(&chunks.concat())
            .map(Some)
            .map_err(ServiceError::internal)
    }
}

fn once(bytes: Bytes) -> ByteStream {
    use futures::StreamExt;
    futures::stream::once(async move { Ok(bytes) }).boxed()
}
