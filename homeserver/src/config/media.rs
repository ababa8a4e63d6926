//! The `[media]` section of the configuration file: limits, the legacy
//! unauthenticated endpoints, and which engine stores the bytes.

use std::path::PathBuf;

use serde::Deserialize;

/// Where media bytes live.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaBackend {
    /// Files under `path` (default `data_dir/media`).
    #[default]
    Fs,
    /// An S3-compatible bucket, `[media.s3]` (needs the `s3` cargo feature).
    S3,
}

/// `[media.s3]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:9000` for MinIO or moto; AWS's own when absent.
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Static credentials; both or neither.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// `endpoint/bucket/key` URLs instead of `bucket.endpoint/key`.
    #[serde(default)]
    pub path_style: bool,
    /// Answer downloads with a redirect to a presigned URL instead of
    /// streaming the bytes through the server.
    #[serde(default)]
    pub presign_downloads: bool,
    #[serde(default = "default_presign_ttl")]
    pub presign_ttl_secs: u64,
    /// Create the bucket at start-up if it does not exist.
    #[serde(default)]
    pub create_bucket: bool,
}

fn default_region() -> String {
    "us-east-1".into()
}

fn default_presign_ttl() -> u64 {
    300
}

/// `[media]` as written in the file; every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MediaFileConfig {
    pub max_upload_bytes: Option<u64>,
    pub legacy_endpoints: Option<bool>,
    pub backend: Option<MediaBackend>,
    pub path: Option<PathBuf>,
    pub s3: Option<S3Config>,
}

/// The resolved media settings.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// Largest upload accepted, in bytes (media routes only; the rest of the
    /// API keeps `max_request_bytes`).
    pub max_upload_bytes: u64,
    /// Serve the unauthenticated `/_matrix/media/v3/{download,thumbnail}`.
    pub legacy_endpoints: bool,
    pub backend: MediaBackend,
    /// Root of the filesystem engine; `None`: `data_dir/media`.
    pub path: Option<PathBuf>,
    pub s3: Option<S3Config>,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_upload_bytes: 50 * 1024 * 1024,
            legacy_endpoints: true,
            backend: MediaBackend::Fs,
            path: None,
            s3: None,
        }
    }
}

impl MediaConfig {
    /// Applies the file's `[media]` section over the defaults.
    pub fn from_file(file: Option<MediaFileConfig>) -> anyhow::Result<Self> {
        let file = file.unwrap_or_default();
        let defaults = Self::default();
        let config = Self {
            max_upload_bytes: file.max_upload_bytes.unwrap_or(defaults.max_upload_bytes),
            legacy_endpoints: file.legacy_endpoints.unwrap_or(defaults.legacy_endpoints),
            backend: file.backend.unwrap_or(defaults.backend),
            path: file.path,
            s3: file.s3,
        };
        if config.backend == MediaBackend::S3 {
            let Some(s3) = &config.s3 else {
                anyhow::bail!("media.backend = \"s3\" needs a [media.s3] section");
            };
            if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
                anyhow::bail!(
                    "media.s3: give both access_key_id and secret_access_key, or neither"
                );
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_section_parses() {
        let file: MediaFileConfig = toml::from_str(
            "backend = \"s3\"\nmax_upload_bytes = 10\n[s3]\nbucket = \"b\"\n\
             endpoint = \"http://127.0.0.1:9\"\npath_style = true\n\
             access_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        )
        .unwrap();
        let config = MediaConfig::from_file(Some(file)).unwrap();
        assert_eq!(config.backend, MediaBackend::S3);
        assert_eq!(config.max_upload_bytes, 10);
        let s3 = config.s3.unwrap();
        assert!(s3.path_style);
        assert_eq!(s3.region, "us-east-1");
        assert!(config.legacy_endpoints);
    }

    #[test]
    fn s3_backend_needs_its_section() {
        let file: MediaFileConfig = toml::from_str("backend = \"s3\"\n").unwrap();
        assert!(MediaConfig::from_file(Some(file)).is_err());
    }
}
