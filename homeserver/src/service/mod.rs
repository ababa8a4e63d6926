//! The service layer: Matrix rules, independent of HTTP and of storage engines.

pub mod accounts;
pub mod error;
pub mod identifiers;
pub mod keys;
pub mod media;
pub mod notifier;
pub mod pdu;
pub mod rate_limit;
pub mod receipts;
pub mod rooms;
pub mod sync;
pub mod timeline_cache;
pub mod token;
pub mod typing;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::media::{MediaMetadataStore, MediaStore};
use crate::store::{AccountStore, Ephemeral, EventBus, ReceiptStore, RoomStore};
use accounts::AccountService;
use keys::ServerKey;
use media::MediaService;
use notifier::Notifier;
use rate_limit::RateLimiter;
use receipts::ReceiptService;
use rooms::RoomService;
use sync::SyncService;
use timeline_cache::TimelineCache;
use typing::TypingService;

/// Everything the API layer needs, built once at start-up and shared through
/// axum's `State` (no globals).
pub struct Services {
    pub config: Config,
    pub accounts: AccountService,
    pub rooms: RoomService,
    pub sync: SyncService,
    pub typing: TypingService,
    pub receipts: Arc<ReceiptService>,
    pub media: MediaService,
    pub rate_limiter: RateLimiter,
    pub shutdown: CancellationToken,
}

/// The engines behind the traits, as chosen by configuration.
pub struct Backends {
    pub accounts: Arc<dyn AccountStore>,
    pub rooms: Arc<dyn RoomStore>,
    pub bus: Arc<dyn EventBus>,
    pub ephemeral: Arc<dyn Ephemeral>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub media: Arc<dyn MediaStore>,
    pub media_metadata: Arc<dyn MediaMetadataStore>,
}

impl Services {
    /// Wires the services over the given engines.
    pub async fn new(
        config: Config,
        backends: Backends,
        key: ServerKey,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Arc<Self>> {
        let key = Arc::new(key);
        let cache = Arc::new(TimelineCache::new(backends.rooms.events_position().await?));
        let notifier = Notifier::new(backends.rooms.clone());
        notifier.spawn(backends.bus.as_ref(), shutdown.clone());
        let server_name = config.server_name.clone();
        let receipts =
            Arc::new(ReceiptService::new(backends.receipts, backends.bus.clone()).await?);
        Ok(Arc::new(Self {
            accounts: AccountService::new(
                backends.accounts.clone(),
                backends.bus.clone(),
                server_name.clone(),
            ),
            rooms: RoomService::new(
                backends.rooms.clone(),
                backends.accounts.clone(),
                backends.bus.clone(),
                cache.clone(),
                key,
                server_name,
            ),
            sync: SyncService::new(
                backends.rooms,
                cache,
                backends.accounts,
                backends.ephemeral.clone(),
                receipts.clone(),
                notifier,
                shutdown.clone(),
            ),
            typing: TypingService::new(backends.ephemeral, backends.bus, shutdown.clone()),
            receipts,
            media: MediaService::new(
                backends.media,
                backends.media_metadata,
                config.server_name.clone(),
                config.media.max_upload_bytes,
                shutdown.clone(),
            ),
            rate_limiter: RateLimiter::new(!config.disable_rate_limits),
            config,
            shutdown,
        }))
    }
}
