//! Tern: a Matrix-compatible messaging homeserver.
//!
//! # Layout
//!
//! Requests flow down through four layers, one folder each:
//!
//! - [`api`]: HTTP. Routing, extractors (auth, JSON, paths), one file per
//!   spec area, and the mapping of errors to Matrix JSON. Handlers are thin:
//!   parse, call one service, shape the response. `api::federation` is the
//!   Server-Server API (X-Matrix checked by its `Signed` extractor) and
//!   `api::tls` the federation listener.
//! - [`service`]: the Matrix rules. Accounts, room authorization, event
//!   building and signing, history visibility, sync assembly, the notifier
//!   that wakes waiting syncs, and `service::federation` (keys, signed
//!   requests, discovery, checking remote events, joins, leaves and
//!   invites through other servers, the outbox). The room service's
//!   `resident`, `remote_invite` and `served` files are this server's side
//!   of other servers' joins, invites and reads, and `service::edus`
//!   applies their typing and receipts. Knows nothing of HTTP or of any
//!   database.
//! - [`store`]: the traits the services depend on, one file each
//!   (`AccountStore`, `RoomStore`, `ReceiptStore`, `PushStore`, `EventBus`,
//!   `TypingStore`, `PresenceStore`, `ConnectionLeases`, `RateLimitStore`,
//!   media), `StoreError`, and their conformance suite. Identifiers are
//!   ruma's typed ids from the extractors down to the engines.
//! - `store::sqlite`, `store::memory`: the embedded engines, behind cargo
//!   features; `store::postgres` (feature `postgres`) is the relational
//!   engine several nodes share, chosen by `storage = "postgres"`. The
//!   queries both relational engines run are written once in `store/sql/`
//!   and compiled inside each, against its `dialect`.
//!
//! [`run`] wires the layers from a [`config::Config`] and serves until the
//! shutdown future resolves, then drains requests and flushes writes.

pub mod api;
pub mod config;
pub mod service;
pub mod store;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use config::{Config, Engine};
use service::keys::ServerKey;
use service::{Backends, Services};

/// Opens the configured backends and builds the services. Also returns the
/// relational engine as a [`store::Database`], for shutdown to flush.
pub async fn build_services(
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<(Arc<Services>, Arc<dyn store::Database>)> {
    std::fs::create_dir_all(&config.data_dir)?;
    let key = ServerKey::load_or_generate(&config.data_dir)?;
    let (backends, database) = match config.storage {
        Engine::Sqlite => {
            let sqlite =
                Arc::new(store::sqlite::SqliteStore::open(&config.data_dir.join("tern.db")).await?);
            (
                relational_backends(&config, sqlite.clone()).await?,
                sqlite as _,
            )
        }
        #[cfg(feature = "postgres")]
        Engine::Postgres => {
            let settings = config
                .postgres
                .as_ref()
                .ok_or_else(|| anyhow::anyhow!("storage = \"postgres\" needs [postgres] url"))?;
            let postgres = Arc::new(
                store::postgres::PgStore::open(&settings.url, settings.max_connections)
                    .await
                    .map_err(|e| anyhow::anyhow!("postgres: {e}"))?,
            );
            (
                relational_backends(&config, postgres.clone()).await?,
                postgres as _,
            )
        }
        #[cfg(not(feature = "postgres"))]
        Engine::Postgres => anyhow::bail!(
            "storage = \"postgres\" is configured but this build lacks the `postgres` feature \
             (cargo build --release -p homeserver --features postgres)"
        ),
    };
    Ok((
        Services::new(config, backends, key, shutdown).await?,
        database,
    ))
}

/// The backends around one relational engine, which serves every trait it
/// can (accounts, rooms, receipts, pushers, media metadata).
async fn relational_backends<S>(config: &Config, engine: Arc<S>) -> anyhow::Result<Backends>
where
    S: store::AccountStore
        + store::RoomStore
        + store::ReceiptStore
        + store::PushStore
        + store::FederationStore
        + store::E2eeStore
        + store::media::MediaMetadataStore
        + 'static,
{
    let (bus, cluster) = open_bus(config).await?;
    let ephemeral = open_ephemeral(config).await?;
    // Only the nodes of a cluster share who syncs where and the rate limits;
    // a single node keeps both in its own memory.
    let shared = cluster.is_some();
    Ok(Backends {
        accounts: engine.clone(),
        rooms: open_rooms(config, engine.clone()).await?,
        bus,
        cluster,
        typing: ephemeral.clone(),
        presence: ephemeral.clone(),
        leases: shared.then(|| ephemeral.clone() as _),
        rate_limits: shared.then_some(ephemeral as _),
        receipts: engine.clone(),
        push: engine.clone(),
        federation: engine.clone(),
        e2ee: engine.clone(),
        media: store::media::open(config).await?,
        media_metadata: engine,
    })
}

/// The event bus: in-process, or shared with the other nodes of a cluster
/// over Kafka when `[kafka]` is set.
async fn open_bus(
    config: &Config,
) -> anyhow::Result<(
    Arc<dyn store::EventBus>,
    Option<Arc<store::cluster::ClusterBus>>,
)> {
    match &config.kafka {
        None => Ok((Arc::new(store::memory::MemoryBus::new(65_536)), None)),
        #[cfg(feature = "kafka")]
        Some(kafka) => {
            let settings = store::kafka::KafkaSettings {
                brokers: kafka.brokers.clone(),
                topic: kafka.topic.clone(),
                partitions: kafka.partitions,
                replication_factor: kafka.replication_factor,
            };
            // Unique per process: a node skips only its own messages.
            let origin = format!(
                "{}-{}",
                std::process::id(),
                service::accounts::random_token(9)
            );
            let kafka_transport = store::kafka::KafkaTransport::connect(&settings, origin.clone())
                .await
                .map_err(|e| anyhow::anyhow!("kafka at {}: {e}", kafka.brokers))?;
            let transport: Arc<dyn store::cluster::ClusterTransport> = Arc::new(kafka_transport);
            // Typing and presence wake-ups over Redis pub/sub (`[redis]` is
            // required with `[kafka]`), the rest over Kafka.
            #[cfg(feature = "redis")]
            let transport: Arc<dyn store::cluster::ClusterTransport> = match &config.redis {
                Some(redis) => Arc::new(store::redis_bus::SplitTransport {
                    ephemeral: Arc::new(
                        store::redis_bus::RedisTransport::connect(
                            &redis.url,
                            &redis.key_prefix,
                            origin,
                        )
                        .await
                        .map_err(|e| anyhow::anyhow!("redis at {}: {e}", redis.url))?,
                    ),
                    ordered: transport,
                }),
                None => transport,
            };
            let bus = Arc::new(store::cluster::ClusterBus::new(transport));
            Ok((bus.clone(), Some(bus)))
        }
        #[cfg(not(feature = "kafka"))]
        Some(_) => anyhow::bail!(
            "[kafka] is configured but this build lacks the `kafka` feature \
             (cargo build --release -p homeserver --features kafka)"
        ),
    }
}

/// Rooms and timelines: the relational engine, with timeline reads served
/// from ScyllaDB when `[scylla]` is set.
async fn open_rooms(
    config: &Config,
    relational: Arc<dyn store::RoomStore>,
) -> anyhow::Result<Arc<dyn store::RoomStore>> {
    match &config.scylla {
        None => Ok(relational),
        #[cfg(feature = "scylla")]
        Some(scylla) => {
            let settings = store::scylla::ScyllaSettings {
                nodes: scylla.nodes.clone(),
                keyspace: scylla.keyspace.clone(),
                replication_factor: scylla.replication_factor,
            };
            let nodes = scylla.nodes.join(",");
            let timeline = store::scylla::ScyllaTimeline::connect(&settings)
                .await
                .map_err(|e| anyhow::anyhow!("scylla at {nodes}: {e}"))?;
            // One checkpoint per relational database: this data directory's.
            let data_dir = std::fs::canonicalize(&config.data_dir)?;
            let writer = format!("{}:{}", config.server_name, data_dir.display());
            let timeline = Arc::new(timeline);
            let store = store::scylla::ScyllaTimelineStore::open(relational, timeline, &writer)
                .await
                .map_err(|e| anyhow::anyhow!("scylla at {nodes}: {e}"))?;
            Ok(Arc::new(store))
        }
        #[cfg(not(feature = "scylla"))]
        Some(_) => anyhow::bail!(
            "[scylla] is configured but this build lacks the `scylla` feature \
             (cargo build --release -p homeserver --features scylla)"
        ),
    }
}

/// What any engine of short-lived data stores: typing, presence, and (on a
/// cluster) connection leases and rate-limit buckets.
trait Ephemeral:
    store::TypingStore + store::PresenceStore + store::ConnectionLeases + store::RateLimitStore
{
}

impl<T> Ephemeral for T where
    T: store::TypingStore + store::PresenceStore + store::ConnectionLeases + store::RateLimitStore
{
}

/// Typing and presence: in Redis when `[redis]` is set, else in memory.
async fn open_ephemeral(config: &Config) -> anyhow::Result<Arc<dyn Ephemeral>> {
    match &config.redis {
        None => Ok(Arc::new(store::memory::MemoryEphemeral::default())),
        #[cfg(feature = "redis")]
        Some(redis) => Ok(Arc::new(
            store::redis_store::RedisEphemeral::connect(&redis.url, &redis.key_prefix)
                .await
                .map_err(|e| anyhow::anyhow!("redis at {}: {e}", redis.url))?,
        )),
        #[cfg(not(feature = "redis"))]
        Some(_) => anyhow::bail!(
            "[redis] is configured but this build lacks the `redis` feature \
             (cargo build --release -p homeserver --features redis)"
        ),
    }
}

/// Serves the client API until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(config.listen).await?;
    serve(listener, config, shutdown).await
}

/// Like [`run`], on an already bound listener (tests bind port 0).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let (services, database) = build_services(config, cancel.clone()).await?;
    tracing::info!(addr = %listener.local_addr()?, server_name = %services.config.server_name, "listening");
    let app = api::router(services.clone());
    if let Some(addr) = services.config.federation.listen {
        serve_federation(addr, services.clone(), cancel.clone()).await?;
    }
    let stop = cancel.clone();
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        shutdown.await;
        tracing::info!("shutting down");
        // Wakes waiting syncs so open long-polls answer now.
        stop.cancel();
    })
    .await?;
    cancel.cancel();
    // Every acknowledged write is already durable; this flushes the rest.
    database.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The federation listener: TLS on `addr`, the Server-Server API only,
/// until `stop` is cancelled.
async fn serve_federation(
    addr: std::net::SocketAddr,
    services: Arc<Services>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let files =
        services.config.federation.tls.as_ref().ok_or_else(|| {
            anyhow::anyhow!("the federation listener needs --tls-cert and --tls-key")
        })?;
    let acceptor = api::tls::acceptor(files)?;
    let tcp = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("federation listener on {addr}: {e}"))?;
    let listener = api::tls::TlsListener::new(tcp, acceptor, stop.clone())?;
    tracing::info!(%addr, server_name = %services.config.server_name, "federating: TLS listener up");
    let app = api::federation_router(services);
    tokio::spawn(async move {
        let served = axum::serve(listener, app.into_make_service())
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        if let Err(err) = served {
            tracing::error!(%err, "federation listener stopped");
        }
    });
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}

#[cfg(all(test, any(not(feature = "postgres"), not(feature = "scylla"))))]
mod tests {
    use super::*;

    #[cfg(not(feature = "postgres"))]
    #[tokio::test]
    async fn postgres_without_the_feature_is_a_clear_start_up_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            storage: Engine::Postgres,
            postgres: Some(config::PostgresConfig {
                url: "postgres://127.0.0.1/none".into(),
                max_connections: 2,
            }),
            ..Config::default()
        };
        let err = build_services(config, CancellationToken::new())
            .await
            .err()
            .expect("start-up must fail");
        assert!(err.to_string().contains("`postgres` feature"), "{err}");
    }

    /// `[scylla]` in a build without the engine is refused at start-up,
    /// saying which feature is missing (with it, the engine connects).
    #[cfg(not(feature = "scylla"))]
    #[tokio::test]
    async fn scylla_without_the_feature_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            data_dir: dir.path().to_owned(),
            scylla: Some(toml::from_str("").unwrap()),
            ..Config::default()
        };
        let err = match build_services(config, CancellationToken::new()).await {
            Ok(_) => panic!("started without the scylla feature"),
            Err(err) => err.to_string(),
        };
        assert!(err.contains("lacks the `scylla` feature"), "{err}");
    }
}
