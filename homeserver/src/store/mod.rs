//! Storage traits: the narrow seams between the service layer and the engines.
//!
//! One trait per domain (accounts, rooms and their timelines, receipts,
//! pushers, the event bus, and the short-lived typing, presence, connection
//! leases and rate-limit buckets). Every trait is async and object safe so the service layer
//! holds `Arc<dyn Trait>` and never learns which engine it talks to. Each engine
//! lives in its own module behind a cargo feature, and every engine must pass
//! the same suite in [`conformance`].

use async_trait::async_trait;

mod accounts;
mod bus;
pub mod cluster;
pub mod e2ee;
mod error;
mod federation;
#[cfg(feature = "kafka")]
pub mod kafka;
mod leases;
pub mod media;
pub mod memory;
#[cfg(feature = "postgres")]
pub mod postgres;
mod presence;
mod push;
mod rate_limits;
mod receipts;
#[cfg(feature = "redis")]
pub mod redis_bus;
#[cfg(feature = "redis")]
pub mod redis_store;
mod rooms;
#[cfg(feature = "scylla")]
pub mod scylla;
#[cfg(feature = "sqlite")]
pub mod sqlite;
mod typing;

#[cfg(test)]
pub mod conformance;

pub use accounts::{AccountDataEntry, AccountStore, DirectoryUser, Report, TokenOwner, UserRecord};
pub use bus::{EventBus, StreamNotice};
pub use e2ee::E2eeStore;
pub use error::{chain, parse_id, Cause, StoreError, StoreResult};
pub use federation::{FederationStore, RoomDestination};
pub use leases::ConnectionLeases;
pub use presence::{PresenceRecord, PresenceState, PresenceStore};
pub use push::{OutboxPush, PushStore, PusherRecord, QueuedPush};
pub use rate_limits::RateLimitStore;
pub use receipts::{NewReceipt, ReceiptRecord, ReceiptStore};
pub use rooms::{
    Direction, Durable, EventState, MembershipRecord, NewEvent, NewStateGroup, Outlier, Refused,
    RelationQuery, RelationSummaries, RoomSlice, RoomStore, StateGroup, StateKeyed, StateReset,
    StoredEvent, ThreadSummary, TxnKey,
};
pub use typing::TypingStore;

/// A position in a totally ordered stream. Positions only grow, and a position
/// once returned by a write is durable.
pub type StreamPos = i64;

/// The relational engine as a whole (SQLite or PostgreSQL), for what only
/// start-up and shutdown do with it; the services see the per-domain traits.
#[async_trait]
pub trait Database: Send + Sync {
    /// Waits for queued writes to commit, then closes the connections.
    async fn close(&self);
}
