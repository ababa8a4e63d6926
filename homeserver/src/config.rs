//! Configuration: defaults, then a TOML file (`--config`), then environment
//! variables (`TERN_*`), then command-line flags; later sources win.

pub mod client;
pub mod cluster;
pub mod federation;
pub mod media;
pub mod scylla;
mod sources;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use ruma_common::{OwnedServerName, ServerName};
use serde::Deserialize;

/// Command-line flags. Scripts and benchmarks rely on these exact spellings.
#[derive(Debug, Parser, Default)]
#[command(
    name = "homeserver",
    version,
    about = "Tern: a Matrix-compatible homeserver"
)]
pub struct Args {
    /// Without one, the server runs.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// TOML configuration file.
    #[arg(long, env = "TERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8008].
    #[arg(long, env = "TERN_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// The server name in user and room ids [default: localhost].
    #[arg(long, env = "TERN_SERVER_NAME")]
    pub server_name: Option<String>,
    /// Where the database and signing key live [default: ./data].
    #[arg(long, env = "TERN_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// The URL clients reach this server at (`https://matrix.example.org`),
    /// announced in `/.well-known/matrix/client` [default: from the request's Host].
    #[arg(long, env = "TERN_PUBLIC_BASE_URL")]
    pub public_base_url: Option<String>,
    /// Let anyone register an account.
    #[arg(long, env = "TERN_ALLOW_REGISTRATION")]
    pub allow_registration: bool,
    /// Turn off rate limiting (benchmarks, tests).
    #[arg(long, env = "TERN_DISABLE_RATE_LIMITS")]
    pub disable_rate_limits: bool,
    /// Milliseconds without activity before a user shows as unavailable [default: 300000].
    #[arg(long, env = "TERN_PRESENCE_IDLE_MS")]
    pub presence_idle_ms: Option<u64>,
    /// Milliseconds after a user's last sync ends before they show as offline [default: 30000].
    #[arg(long, env = "TERN_PRESENCE_OFFLINE_MS")]
    pub presence_offline_ms: Option<u64>,
    /// Milliseconds a notification for a connected user waits for one of
    /// their devices to receive the message before it is pushed [default: 3000].
    #[arg(long, env = "TERN_PUSH_DELIVERY_GRACE_MS")]
    pub push_delivery_grace_ms: Option<u64>,
    /// Milliseconds between keep-alive comments on an SSE sync stream [default: 15000].
    #[arg(long, env = "TERN_SSE_KEEP_ALIVE_MS")]
    pub sse_keep_alive_ms: Option<u64>,
    /// Keep typing and presence in this Redis (`redis://host:port`), shared by all nodes.
    #[arg(long, env = "TERN_REDIS_URL")]
    pub redis_url: Option<String>,
    /// Keep accounts, rooms and timelines in this PostgreSQL database
    /// (`postgres://user@host/db`), shared by all nodes; selects `storage = "postgres"`.
    #[arg(long, env = "TERN_POSTGRES_URL")]
    pub postgres_url: Option<String>,
    /// Join a cluster whose nodes share what they commit over these Kafka brokers (`host:port,...`).
    #[arg(long, env = "TERN_KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Federate: listen for other Matrix servers with TLS on this address
    /// (the port of the server name, or 8448).
    #[arg(long, env = "TERN_FEDERATION_LISTEN")]
    pub federation_listen: Option<SocketAddr>,
    /// PEM certificate chain of the federation listener.
    #[arg(long, env = "TERN_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of the federation listener.
    #[arg(long, env = "TERN_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Let federation requests reach loopback and private addresses.
    #[arg(long, env = "TERN_FEDERATION_ALLOW_PRIVATE")]
    pub federation_allow_private: bool,
    /// Accept any TLS certificate from other servers (tests only).
    #[arg(long, env = "TERN_FEDERATION_INSECURE_SKIP_VERIFY")]
    pub federation_insecure_skip_verify: bool,
}

/// What the binary does instead of serving.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reads a configuration file exactly as the server would (with the
    /// environment and flags over it), prints one line, and exits non-zero
    /// if the server would refuse it.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Retires the signing key (other servers still see its public half
    /// under `old_verify_keys`) and makes a new one under a new key id;
    /// a running server picks it up when restarted.
    RotateSigningKey,
}

/// Which storage engine backs accounts, rooms and timelines. Each engine is
/// compiled in by its cargo feature; the variant exists either way, so a
/// build without the feature can say so instead of failing to parse.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Embedded, in `data_dir/tern.db` (feature `sqlite`, the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database that several nodes may share (feature
    /// `postgres`, settings in `[postgres]`).
    Postgres,
}

/// The settings file, and what flags and environment merge into it
/// ([`sources`]); every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub server_name: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub public_base_url: Option<String>,
    pub allow_registration: Option<bool>,
    pub disable_rate_limits: Option<bool>,
    pub max_request_bytes: Option<usize>,
    pub storage: Option<Engine>,
    pub presence: Option<PresenceFileConfig>,
    pub push: Option<PushConfig>,
    pub media: Option<media::MediaFileConfig>,
    pub sync: Option<SyncFileConfig>,
    pub redis: Option<RedisConfig>,
    pub postgres: Option<PostgresConfig>,
    pub kafka: Option<cluster::KafkaConfig>,
    pub scylla: Option<scylla::ScyllaConfig>,
    pub federation: Option<federation::FederationFileConfig>,
    pub turn: Option<client::TurnConfig>,
    pub support: Option<client::SupportConfig>,
}

/// The `[postgres]` section: where `storage = "postgres"` keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    pub url: String,
    /// Connections of this node's pool (each node has its own).
    #[serde(default = "default_postgres_connections")]
    pub max_connections: u32,
}

fn default_postgres_connections() -> u32 {
    16
}

/// The `[redis]` section: typing and presence in Redis instead of memory,
/// so every node sees the same (the distributed deployment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// Namespaces every key, so deployments can share one Redis.
    #[serde(default = "default_redis_prefix")]
    pub key_prefix: String,
}

fn default_redis_prefix() -> String {
    "tern:".to_owned()
}

/// The `[push]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Push users who are connected right now at once, whether or not a
    /// device of theirs receives the message (default: a connected user is
    /// pushed only what none of their devices received within
    /// `delivery_grace_ms`).
    #[serde(default)]
    pub notify_online_users: bool,
    /// How long a notification for a user who is connected waits for one of
    /// their devices to receive the message (a delivered receipt) before it
    /// is pushed anyway. A message no device received is always pushed.
    #[serde(default = "default_delivery_grace_ms")]
    pub delivery_grace_ms: u64,
    /// Apps whose pushers this server delivers to FCM itself (`[[push.fcm]]`).
    #[serde(default)]
    pub fcm: Vec<FcmAppConfig>,
}

fn default_delivery_grace_ms() -> u64 {
    3_000
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            notify_online_users: false,
            delivery_grace_ms: default_delivery_grace_ms(),
            fcm: Vec::new(),
        }
    }
}

/// One `[[push.fcm]]` entry: pushers with this `app_id` have FCM
/// registration tokens as pushkeys and are sent through the FCM HTTP v1
/// API with this service account, instead of to a push gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmAppConfig {
    pub app_id: String,
    /// The service-account key JSON downloaded from the Firebase console.
    pub service_account_file: PathBuf,
    /// Defaults to the key's `project_id`.
    pub project_id: Option<String>,
    #[serde(default = "default_fcm_base_url")]
    pub base_url: String,
    /// Overrides the key's `token_uri` (tests, proxies).
    pub token_url: Option<String>,
}

fn default_fcm_base_url() -> String {
    "https://fcm.googleapis.com".to_owned()
}

/// The `[sync]` section of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncFileConfig {
    pub sse_keep_alive_ms: Option<u64>,
}

/// Sync settings.
#[derive(Debug, Clone)]
pub struct SyncConfig {
    /// Interval of keep-alive comments on SSE streams: keeps proxies from
    /// closing idle streams and shows a closed client within one interval.
    pub sse_keep_alive: Duration,
}

impl SyncConfig {
    fn from_file(file: SyncFileConfig) -> Self {
        Self {
            sse_keep_alive: file
                .sse_keep_alive_ms
                .map(Duration::from_millis)
                .unwrap_or(Self::default().sse_keep_alive),
        }
    }
}

impl Default for SyncConfig {
    fn default() -> Self {
        Self {
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

/// The `[presence]` section of the settings file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PresenceFileConfig {
    pub enabled: Option<bool>,
    pub idle_ms: Option<u64>,
    pub offline_ms: Option<u64>,
}

/// Presence settings.
#[derive(Debug, Clone)]
pub struct PresenceConfig {
    /// Off: nobody's presence is tracked or shown (as Synapse's
    /// `presence.enabled: false`), for deployments that want none of it.
    pub enabled: bool,
    /// An online user with no activity this long becomes `unavailable`.
    pub idle_after: Duration,
    /// A user whose last sync ended this long ago becomes `offline`; covers
    /// the gap between one long-poll and the next.
    pub offline_after: Duration,
}

impl PresenceConfig {
    fn from_file(file: PresenceFileConfig) -> Self {
        let defaults = Self::default();
        Self {
            enabled: file.enabled.unwrap_or(defaults.enabled),
            idle_after: file
                .idle_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.idle_after),
            offline_after: file
                .offline_ms
                .map(Duration::from_millis)
                .unwrap_or(defaults.offline_after),
        }
    }
}

impl Default for PresenceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            idle_after: Duration::from_secs(300),
            offline_after: Duration::from_secs(30),
        }
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub server_name: OwnedServerName,
    pub data_dir: PathBuf,
    /// What `/.well-known/matrix/client` announces; `None`: `http://` and
    /// the request's Host, fine on one machine, not behind a shared cache.
    pub public_base_url: Option<String>,
    pub allow_registration: bool,
    pub disable_rate_limits: bool,
    /// Largest request body accepted, in bytes.
    pub max_request_bytes: usize,
    pub storage: Engine,
    pub presence: PresenceConfig,
    pub push: PushConfig,
    pub media: media::MediaConfig,
    pub sync: SyncConfig,
    /// `None`: typing and presence in this process's memory.
    pub redis: Option<RedisConfig>,
    /// Set when `storage` is [`Engine::Postgres`].
    pub postgres: Option<PostgresConfig>,
    /// `None`: a single node, fan-out in this process.
    pub kafka: Option<cluster::KafkaConfig>,
    /// `None`: timelines are read from the relational engine.
    pub scylla: Option<scylla::ScyllaConfig>,
    pub federation: federation::FederationConfig,
    /// `None`: `/voip/turnServer` answers `{}` (no TURN server).
    pub turn: Option<client::TurnConfig>,
    /// `None`: `/.well-known/matrix/support` answers 404.
    pub support: Option<client::SupportConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8008".parse().expect("valid default address"),
            server_name: ruma_common::owned_server_name!("localhost"),
            data_dir: PathBuf::from("./data"),
            public_base_url: None,
            allow_registration: false,
            disable_rate_limits: false,
            max_request_bytes: 1024 * 1024,
            storage: Engine::Sqlite,
            presence: PresenceConfig::default(),
            push: PushConfig::default(),
            media: media::MediaConfig::default(),
            sync: SyncConfig::default(),
            redis: None,
            postgres: None,
            kafka: None,
            scylla: None,
            federation: federation::FederationConfig::default(),
            turn: None,
            support: None,
        }
    }
}

impl Config {
    /// Resolves the configuration: the file, then environment and flags over
    /// it, then defaults for what none of them sets; then checks the rules
    /// that span settings.
    pub fn from_args(args: Args) -> anyhow::Result<Self> {
        let settings = sources::merge_sources(&args)?;
        let config = Self::with_defaults(settings)?;
        config.check()?;
        Ok(config)
    }

    /// What `homeserver check-config FILE` checks: the configuration the
    /// server would run with if started with `--config FILE`.
    pub fn from_file_and_args(file: PathBuf, args: Args) -> anyhow::Result<Self> {
        Self::from_args(Args {
            config: Some(file),
            command: None,
            ..args
        })
    }

    /// Each setting as given, or its default; values checked on their own.
    fn with_defaults(settings: FileConfig) -> anyhow::Result<Self> {
        let defaults = Config::default();
        Ok(Self {
            listen: settings.listen.unwrap_or(defaults.listen),
            server_name: match settings.server_name {
                Some(name) => ServerName::parse(&name)
                    .map_err(|e| anyhow::anyhow!("invalid server name {name:?}: {e}"))?,
                None => defaults.server_name,
            },
            data_dir: settings.data_dir.unwrap_or(defaults.data_dir),
            public_base_url: settings
                .public_base_url
                .as_deref()
                .map(public_base_url)
                .transpose()?,
            allow_registration: settings
                .allow_registration
                .unwrap_or(defaults.allow_registration),
            disable_rate_limits: settings
                .disable_rate_limits
                .unwrap_or(defaults.disable_rate_limits),
            max_request_bytes: settings
                .max_request_bytes
                .unwrap_or(defaults.max_request_bytes),
            storage: settings.storage.unwrap_or(defaults.storage),
            presence: PresenceConfig::from_file(settings.presence.unwrap_or_default()),
            push: settings.push.unwrap_or_default(),
            media: media::MediaConfig::from_file(settings.media)?,
            sync: SyncConfig::from_file(settings.sync.unwrap_or_default()),
            redis: settings.redis,
            postgres: settings.postgres,
            kafka: settings.kafka,
            scylla: settings.scylla,
            federation: federation::FederationConfig::from_file(
                settings.federation.unwrap_or_default(),
            )?,
            turn: settings.turn,
            support: settings.support,
        })
    }

    /// The rules no single setting can check alone.
    fn check(&self) -> anyhow::Result<()> {
        if self.sync.sse_keep_alive.is_zero() {
            anyhow::bail!("sync.sse_keep_alive_ms must be above zero");
        }
        if self.storage == Engine::Postgres && self.postgres.is_none() {
            anyhow::bail!(
                "storage = \"postgres\" needs [postgres] url (or --postgres-url / TERN_POSTGRES_URL)"
            );
        }
        if let Some(kafka) = &self.kafka {
            kafka.check()?;
            if self.redis.is_none() {
                anyhow::bail!(
                    "[kafka] joins a cluster, whose nodes must share typing and presence: \
                     set [redis] too"
                );
            }
        }
        if let Some(scylla) = &self.scylla {
            scylla.check()?;
        }
        if let Some(turn) = &self.turn {
            turn.check()?;
        }
        if let Some(support) = &self.support {
            support.check()?;
        }
        Ok(())
    }
}

/// Checks `public_base_url`: an absolute http(s) URL with nothing after the
/// path, returned without a trailing slash (clients append `/_matrix/...`).
fn public_base_url(url: &str) -> anyhow::Result<String> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| anyhow::anyhow!("public_base_url {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https")
        || parsed.host_str().is_none()
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
    {
        anyhow::bail!(
            "public_base_url {url:?} must be an http(s) URL like https://matrix.example.org"
        );
    }
    Ok(parsed.as_str().trim_end_matches('/').to_owned())
}

#[cfg(test)]
mod tests;
