//! The layers of configuration merged into one [`FileConfig`]: the file
//! (`--config`), then what flags and environment variables give (clap has
//! already let a flag win over its variable). figment merges the nested
//! sections, so a flag may set `[redis] url` while the file keeps its
//! `key_prefix`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::Serialize;

use super::{Args, FileConfig};

/// Flags and environment in the file's shape; only what was given is set,
/// so the file's value stays wherever a flag is absent.
#[derive(Serialize)]
struct Overrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    server_name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_dir: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    public_base_url: Option<&'a str>,
    /// A switch can only turn on what the file leaves off.
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_registration: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_rate_limits: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<PresenceOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync: Option<SyncOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    push: Option<PushOverrides>,
    #[serde(skip_serializing_if = "Option::is_none")]
    redis: Option<UrlOverride<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgres: Option<UrlOverride<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    kafka: Option<BrokersOverride<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    federation: Option<FederationOverrides<'a>>,
}

/// The federation flags; switches only turn on.
#[derive(Serialize)]
struct FederationOverrides<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_cert: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls_key: Option<&'a PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_private: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    insecure_skip_verify: Option<bool>,
}

impl<'a> FederationOverrides<'a> {
    fn from_args(args: &'a Args) -> Option<Self> {
        let given = args.federation_listen.is_some()
            || args.tls_cert.is_some()
            || args.tls_key.is_some()
            || args.federation_allow_private
            || args.federation_insecure_skip_verify;
        given.then_some(Self {
            listen: args.federation_listen,
            tls_cert: args.tls_cert.as_ref(),
            tls_key: args.tls_key.as_ref(),
            allow_private: args.federation_allow_private.then_some(true),
            insecure_skip_verify: args.federation_insecure_skip_verify.then_some(true),
        })
    }
}

#[derive(Serialize)]
struct PresenceOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    idle_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    offline_ms: Option<u64>,
}

#[derive(Serialize)]
struct SyncOverrides {
    sse_keep_alive_ms: u64,
}

#[derive(Serialize)]
struct PushOverrides {
    delivery_grace_ms: u64,
}

#[derive(Serialize)]
struct UrlOverride<'a> {
    url: &'a str,
}

#[derive(Serialize)]
struct BrokersOverride<'a> {
    brokers: &'a str,
}

impl<'a> Overrides<'a> {
    fn from_args(args: &'a Args) -> Self {
        let presence = (args.presence_idle_ms.is_some() || args.presence_offline_ms.is_some())
            .then_some(PresenceOverrides {
                idle_ms: args.presence_idle_ms,
                offline_ms: args.presence_offline_ms,
            });
        Self {
            listen: args.listen,
            server_name: args.server_name.as_deref(),
            data_dir: args.data_dir.as_ref(),
            public_base_url: args.public_base_url.as_deref(),
            allow_registration: args.allow_registration.then_some(true),
            disable_rate_limits: args.disable_rate_limits.then_some(true),
            presence,
            sync: args
                .sse_keep_alive_ms
                .map(|sse_keep_alive_ms| SyncOverrides { sse_keep_alive_ms }),
            push: args
                .push_delivery_grace_ms
                .map(|delivery_grace_ms| PushOverrides { delivery_grace_ms }),
            redis: args.redis_url.as_deref().map(|url| UrlOverride { url }),
            postgres: args.postgres_url.as_deref().map(|url| UrlOverride { url }),
            kafka: args
                .kafka_brokers
                .as_deref()
                .map(|brokers| BrokersOverride { brokers }),
            federation: FederationOverrides::from_args(args),
        }
    }
}

/// The file, then flags and environment over it, as one settings value.
pub(super) fn merge_sources(args: &Args) -> anyhow::Result<FileConfig> {
    let mut figment = Figment::new();
    if let Some(path) = &args.config {
        figment = figment.merge(Toml::file_exact(readable(path)?));
    }
    figment = figment.merge(Serialized::defaults(Overrides::from_args(args)));
    // A PostgreSQL URL on the command line or in the environment selects
    // the engine unless the file names one (`join` keeps what is there).
    if args.postgres_url.is_some() {
        figment = figment.join(Serialized::default("storage", "postgres"));
    }
    Ok(figment.extract()?)
}

/// Opens the file first, so that an error names it (figment's does not).
fn readable(path: &Path) -> anyhow::Result<&Path> {
    std::fs::File::open(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    Ok(path)
}
