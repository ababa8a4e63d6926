//! [`MediaStore`] on an S3-compatible object store (feature `s3`).
//!
//! Uploads are buffered one part at a time: an object smaller than one part
//! is a single `PutObject`, a larger one a multipart upload that is completed
//! only when the whole stream arrived and aborted otherwise, so a key never
//! shows part of an upload. Downloads stream the `GetObject` body, or are
//! handed to clients as a short-lived presigned URL when configured.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream as S3Body;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::{is_valid_key, ByteStream, MediaObject, MediaStore};
use crate::config::media::S3Config;
use crate::store::{StoreError, StoreResult};

/// Size of each multipart part (S3 wants at least 5 MiB for all but the
/// last); also the most an upload holds in memory at once.
const PART_SIZE: usize = 8 * 1024 * 1024;

pub struct S3MediaStore {
    client: Client,
    bucket: String,
    /// Presigned download URLs live this long; `None`: downloads stream through us.
    presign_ttl: Option<Duration>,
}

fn s3_error(op: &str, err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    // The SDK's Display is terse; its context names the failing step.
    let context = format!("s3 {op}: {}", DisplayErrorContext(&err));
    StoreError::io(context, err)
}

impl S3MediaStore {
    /// Builds the client from the configuration and checks that the bucket
    /// answers (creating it when `create_bucket` is set).
    pub async fn open(config: &S3Config) -> StoreResult<Self> {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let mut builder = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .http_client(http)
            .region(Region::new(config.region.clone()))
            .force_path_style(config.path_style)
            // Checksums only where S3 demands them: the bytes are hashed by
            // the service already, and not every S3 implementation knows them.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            builder = builder.credentials_provider(Credentials::new(
                key,
                secret,
                None,
                None,
                "tern-config",
            ));
        }
        let client = Client::from_conf(builder.build());
        let head = client.head_bucket().bucket(&config.bucket).send().await;
        if let Err(err) = head {
            if !config.create_bucket {
                return Err(s3_error("head bucket", err));
            }
            client
                .create_bucket()
                .bucket(&config.bucket)
                .send()
                .await
                .map_err(|e| s3_error("create bucket", e))?;
            tracing::info!(bucket = %config.bucket, "created the media bucket");
        }
        Ok(Self {
            client,
            bucket: config.bucket.clone(),
            presign_ttl: config
                .presign_downloads
                .then(|| Duration::from_secs(config.presign_ttl_secs)),
        })
    }

    fn check_key(key: &str) -> StoreResult<()> {
        if is_valid_key(key) {
            Ok(())
        } else {
            Err(StoreError::io_says(format!("invalid media key {key:?}")))
        }
    }

    async fn put_multipart(
        &self,
        key: &str,
        upload_id: &str,
        first: Bytes,
        parts: &mut Parts,
    ) -> StoreResult<u64> {
        let mut completed = Vec::new();
        let mut len = 0u64;
        let mut next = Some(first);
        while let Some(part) = next.take() {
            len += part.len() as u64;
            let number = completed.len() as i32 + 1;
            let done = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(upload_id)
                .part_number(number)
                .body(S3Body::from(part))
                .send()
                .await
                .map_err(|e| s3_error("upload part", e))?;
            completed.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(done.e_tag)
                    .build(),
            );
            next = parts.next_part().await?;
        }
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(completed))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| s3_error("complete multipart upload", e))?;
        Ok(len)
    }
}

/// Cuts an upload stream into parts of exactly [`PART_SIZE`] bytes (the last
/// one shorter), each in a buffer of its own that is freed once sent.
struct Parts {
    body: ByteStream,
    /// What is left of the last chunk read.
    carry: Bytes,
    ended: bool,
}

impl Parts {
    fn new(body: ByteStream) -> Self {
        Self {
            body,
            carry: Bytes::new(),
            ended: false,
        }
    }

    /// The next part, `None` after the last.
    async fn next_part(&mut self) -> StoreResult<Option<Bytes>> {
        let mut part = BytesMut::with_capacity(PART_SIZE);
        loop {
            let take = self.carry.len().min(PART_SIZE - part.len());
            part.extend_from_slice(&self.carry.split_to(take));
            if part.len() == PART_SIZE || self.ended {
                break;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.carry = chunk,
                Some(Err(e)) => return Err(StoreError::io("upload stream", e)),
                None => self.ended = true,
            }
        }
        Ok((!part.is_empty()).then(|| part.freeze()))
    }
}

#[async_trait]
impl MediaStore for S3MediaStore {
    async fn put(&self, key: &str, body: ByteStream) -> StoreResult<u64> {
        Self::check_key(key)?;
        let mut parts = Parts::new(body);
        let first = parts.next_part().await?.unwrap_or_default();
        if first.len() < PART_SIZE {
            let len = first.len() as u64;
            self.client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(S3Body::from(first))
                .send()
                .await
                .map_err(|e| s3_error("put object", e))?;
            return Ok(len);
        }
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("create multipart upload", e))?;
        let upload_id = created
            .upload_id
            .ok_or_else(|| StoreError::io_says("s3: multipart upload without an id"))?;
        let result = self.put_multipart(key, &upload_id, first, &mut parts).await;
        if result.is_err() {
            let aborted = self
                .client
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(&upload_id)
                .send()
                .await;
            if let Err(e) = aborted {
                tracing::warn!(error = %DisplayErrorContext(e), key, "aborting a multipart upload failed");
            }
        }
        result
    }

    async fn get(&self, key: &str) -> StoreResult<Option<MediaObject>> {
        Self::check_key(key)?;
        let got = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await;
        let output = match got {
            Ok(output) => output,
            Err(e) if e.as_service_error().is_some_and(|e| e.is_no_such_key()) => return Ok(None),
            Err(e) => return Err(s3_error("get object", e)),
        };
        let len = output
            .content_length
            .and_then(|l| u64::try_from(l).ok())
            .ok_or_else(|| StoreError::io_says("s3 get object: no content length"))?;
        let body = futures::stream::unfold(output.body, |mut body| async move {
            body.next()
                .await
                .map(|chunk| (chunk.map_err(std::io::Error::other), body))
        })
        .boxed();
        Ok(Some(MediaObject { len, body }))
    }

    async fn delete(&self, key: &str) -> StoreResult<()> {
        Self::check_key(key)?;
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| s3_error("delete object", e))?;
        Ok(())
    }

    async fn presigned_download(
        &self,
        key: &str,
        content_type: &str,
        content_disposition: &str,
    ) -> StoreResult<Option<String>> {
        let Some(ttl) = self.presign_ttl else {
            return Ok(None);
        };
        Self::check_key(key)?;
        let presigning = PresigningConfig::expires_in(ttl).map_err(|e| s3_error("presign", e))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .response_content_type(content_type)
            .response_content_disposition(content_disposition)
            .presigned(presigning)
            .await
            .map_err(|e| s3_error("presign", e))?;
        Ok(Some(request.uri().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::S3MediaStore;
    use crate::config::media::S3Config;
    use crate::store::media::conformance;

    /// The same suite as the filesystem engine, against the S3 server named by
    /// `TERN_TEST_S3_ENDPOINT` (scripts/test.sh starts one); fails without it.
    #[tokio::test]
    async fn s3_conformance() {
        let endpoint = std::env::var("TERN_TEST_S3_ENDPOINT").unwrap_or_else(|_| {
            panic!("TERN_TEST_S3_ENDPOINT is not set: run scripts/test.sh, which starts moto")
        });
        let config = S3Config {
            bucket: format!("tern-conformance-{}", std::process::id()),
            endpoint: Some(endpoint),
            region: "us-east-1".into(),
            access_key_id: Some("test".into()),
            secret_access_key: Some("test".into()),
            path_style: true,
            presign_downloads: true,
            presign_ttl_secs: 60,
            create_bucket: true,
        };
        let store = S3MediaStore::open(&config).await.unwrap();
        let url = crate::store::media::MediaStore::presigned_download(
            &store,
            "content/x",
            "text/plain",
            "attachment",
        )
        .await
        .unwrap()
        .unwrap();
        assert!(url.contains("X-Amz-Signature"), "{url}");
        conformance::media_store(Arc::new(store)).await;
    }
}
