//! The conformance suite every storage engine must pass (the Garage habit):
//! written once against the traits, run by each engine's tests.
//!
//! One file per trait; the suites are called as `conformance::room_store`
//! and so on.

mod accounts;
mod ephemeral;
mod push;
mod receipts;
mod rooms;

pub use accounts::account_store;
pub use ephemeral::ephemeral;
pub use push::push_store;
pub use receipts::receipt_store;
pub use rooms::{append_sample, check_sample, room_store, sample_message};
