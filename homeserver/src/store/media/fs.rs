//! [`MediaStore`] on the local filesystem, the default (under `data_dir/media`).
//!
//! A put streams into a temporary file in `tmp/` beside the objects (so the
//! rename stays on one filesystem), fsyncs it, renames it into place and
//! fsyncs the directory: after a crash a key holds the old object or the new
//! one, never part of one. Leftover temporary files are removed at start-up.

use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use futures::StreamExt;
use rand::distributions::{Alphanumeric, DistString};
use tokio::io::AsyncWriteExt;
use tokio_util::io::ReaderStream;

use super::{is_valid_key, ByteStream, MediaObject, MediaStore};
use crate::store::{StoreError, StoreResult};

/// Chunk size of downloads.
const READ_CHUNK: usize = 64 * 1024;

pub struct FsMediaStore {
    root: PathBuf,
}

impl FsMediaStore {
    /// Opens (creating) the store at `root` and removes temporary files that a
    /// crash left behind.
    pub async fn open(root: &Path) -> StoreResult<Self> {
        let tmp = root.join("tmp");
        if tokio::fs::try_exists(&tmp).await.map_err(io_error)? {
            tokio::fs::remove_dir_all(&tmp).await.map_err(io_error)?;
        }
        tokio::fs::create_dir_all(&tmp).await.map_err(io_error)?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    fn path_of(&self, key: &str) -> StoreResult<PathBuf> {
        if !is_valid_key(key) {
            return Err(StoreError::io_says(format!("invalid media key {key:?}")));
        }
        Ok(self.root.join("objects").join(key))
    }

    async fn write_temp(temp: &Path, mut body: ByteStream) -> io::Result<u64> {
        let mut file = tokio::fs::File::create(temp).await?;
        let mut len = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            len += chunk.len() as u64;
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        Ok(len)
    }
}

fn io_error(err: io::Error) -> StoreError {
    StoreError::io("media file", err)
}

/// Makes a rename in `dir` durable.
async fn sync_dir(dir: PathBuf) -> io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(dir)?.sync_all())
        .await
        .map_err(io::Error::other)?
}

#[async_trait]
impl MediaStore for FsMediaStore {
    async fn put(&self, key: &str, body: ByteStream) -> StoreResult<u64> {
        let path = self.path_of(key)?;
        let dir = path.parent().expect("keys have a parent").to_path_buf();
        let new_dir = !tokio::fs::try_exists(&dir).await.map_err(io_error)?;
        tokio::fs::create_dir_all(&dir).await.map_err(io_error)?;
        let name = Alphanumeric.sample_string(&mut rand::thread_rng(), 20);
        let temp = self.root.join("tmp").join(format!("{name}.part"));
        let written = match Self::write_temp(&temp, body).await {
            Ok(len) => tokio::fs::rename(&temp, &path).await.map(|()| len),
            Err(e) => Err(e),
        };
        match written {
            Ok(len) => {
                // A directory made for this object must itself be durable
                // in its parent, or the rename could vanish with it.
                if new_dir {
                    let mut ancestor = dir.parent();
                    while let Some(parent) = ancestor.filter(|p| p.starts_with(&self.root)) {
                        sync_dir(parent.to_path_buf()).await.map_err(io_error)?;
                        ancestor = parent.parent();
                    }
                }
                sync_dir(dir).await.map_err(io_error)?;
                Ok(len)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                Err(io_error(e))
            }
        }
    }

    async fn get(&self, key: &str) -> StoreResult<Option<MediaObject>> {
        let path = self.path_of(key)?;
        let file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        let len = file.metadata().await.map_err(io_error)?.len();
        Ok(Some(MediaObject {
            len,
            body: ReaderStream::with_capacity(file, READ_CHUNK).boxed(),
        }))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        match tokio::fs::remove_file(self.path_of(key)?).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use futures::StreamExt;

    use super::FsMediaStore;
    use crate::store::media::{conformance, MediaStore};

    #[tokio::test]
    async fn fs_conformance() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsMediaStore::open(dir.path()).await.unwrap();
        conformance::media_store(Arc::new(store)).await;
    }

    #[tokio::test]
    async fn failed_put_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsMediaStore::open(dir.path()).await.unwrap();
        let body = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err(std::io::Error::other("client went away")),
        ])
        .boxed();
        assert!(store.put("content/x", body).await.is_err());
        let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
        assert_eq!(leftovers, 0);
    }

    #[tokio::test]
    async fn reopening_clears_crash_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        FsMediaStore::open(dir.path()).await.unwrap();
        std::fs::write(dir.path().join("tmp/abc.part"), b"half").unwrap();
        FsMediaStore::open(dir.path()).await.unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
    }
}
