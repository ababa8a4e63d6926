//! The conformance suite every [`MediaStore`] engine must pass, and one for
//! [`MediaMetadataStore`]: written once, run by each engine's tests.

use std::io;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{ByteStream, MediaMetadataStore, MediaRecord, MediaStore, UploadedContent};
use crate::store::StoreError;

fn chunks(parts: Vec<Vec<u8>>) -> ByteStream {
    futures::stream::iter(parts.into_iter().map(|p| Ok(Bytes::from(p)))).boxed()
}

/// `len` bytes of a fixed pattern, in chunks of 64 KiB.
fn pattern(len: usize) -> Vec<Vec<u8>> {
    let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    bytes.chunks(64 * 1024).map(<[u8]>::to_vec).collect()
}

async fn read_all(store: &dyn MediaStore, key: &str) -> Option<Vec<u8>> {
    let object = store.get(key).await.unwrap()?;
    let bytes: Vec<Bytes> = object.body.try_collect().await.unwrap();
    let bytes = bytes.concat();
    assert_eq!(object.len, bytes.len() as u64, "declared length of {key}");
    Some(bytes)
}

pub async fn media_store(store: Arc<dyn MediaStore>) {
    let store = store.as_ref();
    assert!(read_all(store, "content/missing").await.is_none());

    // Round trip of several chunks, then an overwrite.
    let len = store
        .put(
            "content/a",
            chunks(vec![b"hello ".to_vec(), b"world".to_vec()]),
        )
        .await
        .unwrap();
    assert_eq!(len, 11);
    assert_eq!(read_all(store, "content/a").await.unwrap(), b"hello world");
    store
        .put("content/a", chunks(vec![b"again".to_vec()]))
        .await
        .unwrap();
    assert_eq!(read_all(store, "content/a").await.unwrap(), b"again");

    // An empty object is an object.
    assert_eq!(store.put("content/empty", chunks(vec![])).await.unwrap(), 0);
    assert_eq!(read_all(store, "content/empty").await.unwrap(), b"");

    // A failed upload leaves nothing behind, and the previous object intact.
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(io::Error::other("client went away")),
    ])
    .boxed();
    assert!(store.put("content/b", failing).await.is_err());
    assert!(read_all(store, "content/b").await.is_none());
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(io::Error::other("client went away")),
    ])
    .boxed();
    assert!(store.put("content/a", failing).await.is_err());
    assert_eq!(read_all(store, "content/a").await.unwrap(), b"again");

    // Large enough for several multipart parts on object stores.
    let big = pattern(11 * 1024 * 1024 + 17);
    let expected = big.concat();
    assert_eq!(
        store.put("content/big", chunks(big)).await.unwrap(),
        expected.len() as u64
    );
    assert!(read_all(store, "content/big").await.unwrap() == expected);

    // Exactly one S3 part (8 MiB): the boundary of the single-request path.
    let exact = pattern(8 * 1024 * 1024);
    let expected = exact.concat();
    store.put("content/exact", chunks(exact)).await.unwrap();
    assert!(read_all(store, "content/exact").await.unwrap() == expected);

    // Nested keys (thumbnails) and deletion.
    store
        .put("thumbnail/a/32x32-crop.png", chunks(vec![b"png".to_vec()]))
        .await
        .unwrap();
    assert_eq!(
        read_all(store, "thumbnail/a/32x32-crop.png").await.unwrap(),
        b"png"
    );
    store.delete("content/a").await.unwrap();
    assert!(read_all(store, "content/a").await.is_none());
    store.delete("content/a").await.unwrap();

    // Keys that could escape the store are refused.
    for bad in ["../escape", "/abs", "a/../../b"] {
        assert!(store.put(bad, chunks(vec![b"x".to_vec()])).await.is_err());
        assert!(store.get(bad).await.is_err());
    }
}

fn record(id: &str, pending_until_ts: Option<i64>) -> MediaRecord {
    MediaRecord {
        media_id: id.into(),
        uploader: "@a:test".into(),
        content_type: None,
        filename: None,
        size: None,
        sha256: None,
        created_ts: 1000,
        pending_until_ts,
    }
}

pub async fn media_metadata_store(store: Arc<dyn MediaMetadataStore>) {
    assert!(store.get_media("nope").await.unwrap().is_none());

    let mut done = record("m1", None);
    done.content_type = Some("image/png".into());
    done.filename = Some("cat.png".into());
    done.size = Some(42);
    done.sha256 = Some("ab".repeat(32));
    store.insert_media(&done).await.unwrap();
    assert_eq!(store.get_media("m1").await.unwrap().unwrap(), done);
    assert!(matches!(
        store.insert_media(&done).await,
        Err(StoreError::Conflict)
    ));

    // Pending: reserved, then completed exactly once.
    store.insert_media(&record("m2", Some(5000))).await.unwrap();
    store.insert_media(&record("m3", Some(1500))).await.unwrap();
    assert_eq!(store.count_pending_media("@a:test", 2000).await.unwrap(), 1);
    assert_eq!(store.count_pending_media("@b:test", 0).await.unwrap(), 0);
    let content = UploadedContent {
        content_type: Some("text/plain".into()),
        filename: None,
        size: 3,
        sha256: "cd".repeat(32),
    };
    assert!(store.complete_media("m2", &content).await.unwrap());
    assert!(!store.complete_media("m2", &content).await.unwrap());
    assert!(!store.complete_media("m1", &content).await.unwrap());
    assert!(!store.complete_media("nope", &content).await.unwrap());
    let got = store.get_media("m2").await.unwrap().unwrap();
    assert_eq!(got.pending_until_ts, None);
    assert_eq!(got.size, Some(3));
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(store.count_pending_media("@a:test", 0).await.unwrap(), 1);

    // Expired reservations go; completed media and live ones stay.
    assert_eq!(store.delete_expired_media(1500).await.unwrap(), 1);
    assert!(store.get_media("m3").await.unwrap().is_none());
    assert!(store.get_media("m2").await.unwrap().is_some());
    assert!(store.get_media("m1").await.unwrap().is_some());
    assert_eq!(store.delete_expired_media(1500).await.unwrap(), 0);
}
