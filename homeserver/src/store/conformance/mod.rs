//! The conformance suite every storage engine must pass (the Garage habit):
//! written once against the traits, run by each engine's tests.
//!
//! One file per trait; the suites are called as `conformance::room_store`
//! and so on.

mod accounts;
mod e2ee;
mod federation;
mod leases;
mod presence;
mod push;
mod rate_limits;
mod receipts;
mod rooms;
mod state_groups;
mod typing;

pub use accounts::account_store;
pub use e2ee::e2ee_store;
pub use federation::federation_store;
pub use leases::connection_leases;
pub use presence::presence_store;
pub use push::push_store;
pub use rate_limits::rate_limit_store;
pub use receipts::receipt_store;
pub use rooms::{append_sample, check_sample, room_store, sample_message};
pub use typing::typing_store;

/// Typed ids from text the suites build at run time.
pub fn room(id: &str) -> ruma_common::OwnedRoomId {
    ruma_common::RoomId::parse(id).expect("a valid room id")
}

pub fn user(id: &str) -> ruma_common::OwnedUserId {
    ruma_common::UserId::parse(id).expect("a valid user id")
}

pub fn event(id: &str) -> ruma_common::OwnedEventId {
    ruma_common::EventId::parse(id).expect("a valid event id")
}
