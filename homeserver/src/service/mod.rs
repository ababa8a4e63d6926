//! The service layer: Matrix rules, independent of HTTP and of storage engines.

pub mod accounts;
pub mod cluster;
pub mod e2ee;
mod edus;
pub mod error;
pub mod fcm;
pub mod federation;
pub mod identifiers;
pub mod keys;
pub mod media;
pub mod notifications;
pub mod notifier;
pub mod pdu;
pub mod presence;
pub mod push_rules;
pub mod push_sender;
pub mod pushers;
pub mod rate_limit;
pub mod receipts;
pub mod rooms;
pub mod sync;
pub mod timeline_cache;
pub mod token;
pub mod typing;
pub mod unread;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::store::cluster::ClusterBus;
use crate::store::media::{MediaMetadataStore, MediaStore};
use crate::store::{
    AccountStore, ConnectionLeases, E2eeStore, EventBus, FederationStore, PresenceStore, PushStore,
    RateLimitStore, ReceiptStore, RoomStore, TypingStore,
};
use accounts::AccountService;
use e2ee::{E2eeParts, E2eeService};
use federation::FederationService;
use keys::ServerKey;
use media::MediaService;
use notifications::NotificationService;
use notifier::Notifier;
use presence::{PresenceService, PresenceSources};
use push_rules::PushRuleService;
use pushers::PusherService;
use rate_limit::RateLimiter;
use receipts::ReceiptService;
use rooms::RoomService;
use sync::{SyncService, SyncSources};
use timeline_cache::TimelineCache;
use typing::TypingService;
use unread::UnreadService;

/// Everything the API layer needs, built once at start-up and shared through
/// axum's `State` (no globals).
pub struct Services {
    pub config: Config,
    pub accounts: Arc<AccountService>,
    pub rooms: RoomService,
    pub sync: SyncService,
    /// Keys, to-device messages and key backups.
    pub e2ee: Arc<E2eeService>,
    pub typing: TypingService,
    pub receipts: Arc<ReceiptService>,
    pub presence: Arc<PresenceService>,
    pub push_rules: Arc<PushRuleService>,
    pub pushers: Arc<PusherService>,
    pub notifications: NotificationService,
    pub unread: Arc<UnreadService>,
    pub media: MediaService,
    pub rate_limiter: RateLimiter,
    /// `None`: this server does not federate.
    pub federation: Option<Arc<FederationService>>,
    pub shutdown: CancellationToken,
}

/// The engines behind the traits, as chosen by configuration.
pub struct Backends {
    pub accounts: Arc<dyn AccountStore>,
    pub rooms: Arc<dyn RoomStore>,
    pub bus: Arc<dyn EventBus>,
    /// Set on a node of a cluster: the same bus, with what other nodes share.
    pub cluster: Option<Arc<ClusterBus>>,
    pub typing: Arc<dyn TypingStore>,
    pub presence: Arc<dyn PresenceStore>,
    /// Set on a node of a cluster: which node each user syncs on.
    pub leases: Option<Arc<dyn ConnectionLeases>>,
    /// Set on a node of a cluster: rate-limit buckets all nodes share.
    pub rate_limits: Option<Arc<dyn RateLimitStore>>,
    pub receipts: Arc<dyn ReceiptStore>,
    pub push: Arc<dyn PushStore>,
    /// How far other servers have our events (the durable federation outbox).
    pub federation: Arc<dyn FederationStore>,
    pub media: Arc<dyn MediaStore>,
    pub media_metadata: Arc<dyn MediaMetadataStore>,
    /// Devices, keys, to-device inboxes, UIA sessions and key backups.
    pub e2ee: Arc<dyn E2eeStore>,
}

/// Queues again, in the background, what other servers have yet to accept
/// of our events (after a restart or a crash).
fn resume_federation(
    outbox: federation::sender::Outbox,
    rooms: Arc<dyn RoomStore>,
    server_name: ruma_common::OwnedServerName,
) {
    tokio::spawn(async move {
        match outbox.resume(rooms.as_ref(), &server_name).await {
            Ok(0) => {}
            Ok(queued) => tracing::info!(queued, "resumed sending events to other servers"),
            Err(err) => tracing::error!(%err, "resuming the federation outbox failed"),
        }
        match outbox.resume_edus().await {
            Ok(0) => {}
            Ok(queued) => tracing::info!(queued, "resumed sending to-device messages"),
            Err(err) => tracing::error!(%err, "resuming to-device messages failed"),
        }
    });
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
        let federation = if config.federation.enabled {
            Some(Arc::new(FederationService::new(
                config.federation.clone(),
                config.server_name.clone(),
                key.clone(),
            )?))
        } else {
            tracing::info!(
                "not federating: other Matrix servers cannot reach this one \
                 (set --federation-listen with --tls-cert and --tls-key, or [federation])"
            );
            None
        };
        let cache = Arc::new(TimelineCache::new(backends.rooms.events_position().await?));
        let notifier = Notifier::new(backends.rooms.clone());
        notifier.spawn(backends.bus.as_ref(), shutdown.clone());
        let server_name = config.server_name.clone();
        let receipts =
            Arc::new(ReceiptService::new(backends.receipts.clone(), backends.bus.clone()).await?);
        // Local users' presence changes, for other servers (when federating).
        let (presence_changes, changes_to_share) = match federation.is_some() {
            true => {
                let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        let presence = Arc::new(PresenceService::new(
            config.presence.clone(),
            PresenceSources {
                store: backends.presence,
                leases: backends.leases,
                bus: backends.bus.clone(),
                accounts: backends.accounts.clone(),
                rooms: backends.rooms.clone(),
                notifier: notifier.clone(),
                changes: presence_changes,
            },
            shutdown.clone(),
        ));
        let push_rules = Arc::new(PushRuleService::new(
            backends.accounts.clone(),
            backends.bus.clone(),
        ));
        let outbox = federation.clone().map(|federation| {
            let outbox = federation::sender::Outbox::new(
                federation.clone(),
                backends.federation.clone(),
                backends.e2ee.clone(),
                shutdown.clone(),
            );
            (federation, outbox)
        });
        if let Some((_, outbox)) = &outbox {
            resume_federation(outbox.clone(), backends.rooms.clone(), server_name.clone());
            if let Some(changes) = changes_to_share {
                let sharing = federation::presence::PresenceSharing {
                    presence: presence.clone(),
                    store: backends.federation.clone(),
                    outbox: outbox.clone(),
                    server_name: server_name.clone(),
                };
                federation::presence::spawn(sharing, changes, shutdown.clone());
            }
        }
        let e2ee_federation = outbox.clone();
        let rooms = RoomService::new(
            backends.rooms.clone(),
            backends.accounts.clone(),
            backends.bus.clone(),
            cache.clone(),
            key,
            server_name.clone(),
            outbox,
        );
        let unread = Arc::new(UnreadService::new(
            rooms.clone(),
            backends.rooms.clone(),
            backends.receipts.clone(),
            push_rules.clone(),
            cache.clone(),
        ));
        let notifications = NotificationService::new(
            rooms.clone(),
            backends.rooms.clone(),
            backends.receipts.clone(),
            push_rules.clone(),
        );
        let fcm = Arc::new(fcm::Fcm::from_config(&config.push.fcm)?);
        let acks = Arc::new(sync::AckMarks::default());
        let pushers = Arc::new(
            PusherService::new(backends.push.clone(), fcm.clone(), backends.bus.clone()).await?,
        );
        push_sender::spawn(
            push_sender::PushSenderParts {
                rooms: rooms.clone(),
                room_store: backends.rooms.clone(),
                cache: cache.clone(),
                store: backends.push,
                pushers: pushers.clone(),
                push_rules: push_rules.clone(),
                unread: unread.clone(),
                presence: presence.clone(),
                receipts: backends.receipts.clone(),
                acks: acks.clone(),
                notify_connected: config.push.notify_online_users,
                delivery_grace_ms: config.push.delivery_grace_ms.min(i64::MAX as u64) as i64,
                fcm,
            },
            backends.bus.as_ref(),
            shutdown.clone(),
        );
        let follower = backends.cluster.map(|bus| cluster::FollowerParts {
            bus,
            cache: cache.clone(),
            rooms: backends.rooms.clone(),
            receipts: backends.receipts.clone(),
        });
        let sharing = rooms.clone();
        let e2ee = Arc::new(E2eeService::new(E2eeParts {
            store: backends.e2ee.clone(),
            bus: backends.bus.clone(),
            server_name: server_name.clone(),
            federation: e2ee_federation,
            sharing: backends.federation.clone(),
        }));
        let accounts = Arc::new(AccountService::new(
            backends.accounts.clone(),
            backends.e2ee,
            e2ee.clone(),
            backends.bus.clone(),
            server_name,
        ));
        let services = Arc::new(Self {
            accounts: accounts.clone(),
            rooms,
            sync: SyncService::new(
                SyncSources {
                    rooms: backends.rooms,
                    cache,
                    accounts: backends.accounts,
                    typing: backends.typing.clone(),
                    receipts: receipts.clone(),
                    presence: presence.clone(),
                    unread: unread.clone(),
                    notifier,
                    sharing,
                    acks: acks.clone(),
                    e2ee: e2ee.clone(),
                    ignoring: accounts,
                },
                shutdown.clone(),
            ),
            e2ee,
            typing: TypingService::new(backends.typing, backends.bus, shutdown.clone()),
            receipts,
            presence,
            push_rules,
            pushers,
            notifications,
            unread,
            media: MediaService::new(
                backends.media,
                backends.media_metadata,
                config.server_name.clone(),
                config.media.max_upload_bytes,
                federation.clone(),
                shutdown.clone(),
            ),
            rate_limiter: RateLimiter::new(!config.disable_rate_limits, backends.rate_limits),
            federation,
            config,
            shutdown: shutdown.clone(),
        });
        if let Some(parts) = follower {
            cluster::spawn_follower(services.clone(), parts, shutdown);
        }
        Ok(services)
    }
}
