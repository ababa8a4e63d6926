//! Configuration: defaults, then a TOML file (`--config`), then environment
//! variables (`TERN_*`), then command-line flags; later sources win.

pub mod cluster;
pub mod media;
pub mod scylla;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

/// Command-line flags. Scripts and benchmarks rely on these exact spellings.
#[derive(Debug, Parser, Default)]
#[command(
    name = "homeserver",
    version,
    about = "Tern: a Matrix-compatible homeserver"
)]
pub struct Args {
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

/// The settings file; every field is optional.
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
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushConfig {
    /// Push also to users who are syncing right now (default: only to
    /// those who are not, as the seed says: notify offline users).
    #[serde(default)]
    pub notify_online_users: bool,
    /// Apps whose pushers this server delivers to FCM itself (`[[push.fcm]]`).
    #[serde(default)]
    pub fcm: Vec<FcmAppConfig>,
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
    pub server_name: String,
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
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8008".parse().expect("valid default address"),
            server_name: "localhost".into(),
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
        }
    }
}

impl Config {
    /// Resolves flags and environment (already merged by clap) over the file.
    pub fn from_args(args: Args) -> anyhow::Result<Self> {
        let file: FileConfig = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
            }
            None => FileConfig::default(),
        };
        let defaults = Config::default();
        let server_name = args
            .server_name
            .or(file.server_name)
            .unwrap_or(defaults.server_name);
        if server_name.is_empty()
            || !server_name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
        {
            anyhow::bail!("invalid server name {server_name:?}");
        }
        let public_base_url = args
            .public_base_url
            .or(file.public_base_url)
            .map(|url| public_base_url(&url))
            .transpose()?;
        let presence_file = file.presence.unwrap_or_default();
        let presence = PresenceConfig {
            enabled: presence_file.enabled.unwrap_or(defaults.presence.enabled),
            idle_after: args
                .presence_idle_ms
                .or(presence_file.idle_ms)
                .map(Duration::from_millis)
                .unwrap_or(defaults.presence.idle_after),
            offline_after: args
                .presence_offline_ms
                .or(presence_file.offline_ms)
                .map(Duration::from_millis)
                .unwrap_or(defaults.presence.offline_after),
        };
        let sse_keep_alive = args
            .sse_keep_alive_ms
            .or(file.sync.and_then(|s| s.sse_keep_alive_ms))
            .map(Duration::from_millis)
            .unwrap_or(defaults.sync.sse_keep_alive);
        if sse_keep_alive.is_zero() {
            anyhow::bail!("sync.sse_keep_alive_ms must be above zero");
        }
        let redis = match (args.redis_url, file.redis) {
            (Some(url), file) => Some(RedisConfig {
                url,
                key_prefix: file
                    .map(|r| r.key_prefix)
                    .unwrap_or_else(default_redis_prefix),
            }),
            (None, file) => file,
        };
        let args_chose_postgres = args.postgres_url.is_some();
        let postgres = match (args.postgres_url, file.postgres) {
            (Some(url), file) => Some(PostgresConfig {
                url,
                max_connections: file
                    .map(|p| p.max_connections)
                    .unwrap_or_else(default_postgres_connections),
            }),
            (None, file) => file,
        };
        // A PostgreSQL URL on the command line or in the environment selects
        // the engine unless the file names one.
        let storage = match (file.storage, &postgres) {
            (Some(engine), _) => engine,
            (None, Some(_)) if args_chose_postgres => Engine::Postgres,
            (None, _) => defaults.storage,
        };
        if storage == Engine::Postgres && postgres.is_none() {
            anyhow::bail!(
                "storage = \"postgres\" needs [postgres] url (or --postgres-url / TERN_POSTGRES_URL)"
            );
        }
        let kafka = match (args.kafka_brokers, file.kafka) {
            (Some(brokers), file) => Some(cluster::KafkaConfig::with_brokers(brokers, file)),
            (None, file) => file,
        };
        if let Some(kafka) = &kafka {
            kafka.check()?;
            if redis.is_none() {
                anyhow::bail!(
                    "[kafka] joins a cluster, whose nodes must share typing and presence: \
                     set [redis] too"
                );
            }
        }
        if let Some(scylla) = &file.scylla {
            scylla.check()?;
        }
        Ok(Self {
            presence,
            redis,
            postgres,
            storage,
            kafka,
            scylla: file.scylla,
            sync: SyncConfig { sse_keep_alive },
            push: file.push.unwrap_or_default(),
            listen: args.listen.or(file.listen).unwrap_or(defaults.listen),
            server_name,
            data_dir: args.data_dir.or(file.data_dir).unwrap_or(defaults.data_dir),
            public_base_url,
            allow_registration: args.allow_registration
                || file
                    .allow_registration
                    .unwrap_or(defaults.allow_registration),
            disable_rate_limits: args.disable_rate_limits
                || file
                    .disable_rate_limits
                    .unwrap_or(defaults.disable_rate_limits),
            max_request_bytes: file.max_request_bytes.unwrap_or(defaults.max_request_bytes),
            media: media::MediaConfig::from_file(file.media)?,
        })
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
mod tests {
    use super::*;

    #[test]
    fn public_base_urls_are_checked() {
        assert_eq!(
            public_base_url("https://matrix.example.org/").unwrap(),
            "https://matrix.example.org"
        );
        assert_eq!(
            public_base_url("http://10.0.0.5:8008").unwrap(),
            "http://10.0.0.5:8008"
        );
        for bad in [
            "matrix.example.org",
            "ftp://x.example",
            "https://x.example/?a=b",
            "https://u@x.example",
        ] {
            assert!(public_base_url(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(
            &path,
            "server_name = \"file.example\"\nallow_registration = true\nlisten = \"127.0.0.1:9000\"\nstorage = \"sqlite\"\n",
        )
        .unwrap();
        let args = Args::parse_from([
            "homeserver",
            "--config",
            path.to_str().unwrap(),
            "--server-name",
            "flag.example",
        ]);
        let config = Config::from_args(args).unwrap();
        assert_eq!(config.server_name, "flag.example");
        assert!(config.allow_registration);
        assert_eq!(config.listen.port(), 9000);
    }

    #[test]
    fn zero_config_has_defaults() {
        let config = Config::from_args(Args::parse_from(["homeserver"])).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8008");
        assert_eq!(config.server_name, "localhost");
        assert!(!config.allow_registration);
    }

    #[test]
    fn postgres_from_the_file_or_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(
            &path,
            "storage = \"postgres\"\n[postgres]\nurl = \"postgres://file/db\"\nmax_connections = 4\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let from_file =
            Config::from_args(Args::parse_from(["homeserver", "--config", config])).unwrap();
        assert_eq!(from_file.storage, Engine::Postgres);
        let pg = from_file.postgres.unwrap();
        assert_eq!(
            (pg.url.as_str(), pg.max_connections),
            ("postgres://file/db", 4)
        );

        // The flag wins over the file's URL and keeps its pool size.
        let args = [
            "homeserver",
            "--config",
            config,
            "--postgres-url",
            "postgres://flag/db",
        ];
        let pg = Config::from_args(Args::parse_from(args))
            .unwrap()
            .postgres
            .unwrap();
        assert_eq!(
            (pg.url.as_str(), pg.max_connections),
            ("postgres://flag/db", 4)
        );

        // A URL alone selects the engine; storage=postgres without one is refused.
        let args = ["homeserver", "--postgres-url", "postgres://flag/db"];
        let config = Config::from_args(Args::parse_from(args)).unwrap();
        assert_eq!(config.storage, Engine::Postgres);
        std::fs::write(&path, "storage = \"postgres\"\n").unwrap();
        let args = ["homeserver", "--config", path.to_str().unwrap()];
        let err = Config::from_args(Args::parse_from(args)).unwrap_err();
        assert!(err.to_string().contains("[postgres] url"), "{err}");
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tern.toml");
        std::fs::write(&path, "sever_name = \"typo\"\n").unwrap();
        let args = Args::parse_from(["homeserver", "--config", path.to_str().unwrap()]);
        assert!(Config::from_args(args).is_err());
    }
}
