//! # Black-box test harness for Tern
//!
//! The tests in `tests/tests/` start the real `homeserver` binary on a free
//! loopback port with its own temporary data directory, and talk to it only
//! over HTTP, the way a Matrix client would. Nothing here links against the
//! server crate, so what passes here is what a client gets.
//!
//! # Layout
//! - [`TestServer`] owns one server process: start, graceful stop (SIGTERM),
//!   crash (SIGKILL) and restart on the same data directory and port.
//! - [`Client`] is one device of one user (or an anonymous caller), with a few
//!   helpers for the Client-Server API calls the tests use and generic
//!   `get`/`post`/`put` that return `(status, json)` for everything else.
//! - [`room_of_two`], [`public_room`] and [`Client::send`]: the fixtures
//!   most tests start from.
//! - [`eventually`]: the one way to wait for a condition. No test sleeps
//!   as a precondition or as proof that something did not happen; absence
//!   is shown with a barrier event that must come after the one that must not.
//! - [`require_env`]: the services `scripts/test.sh` provides; a test that
//!   needs one fails without it rather than passing silently.
//!
//! The binary is not built by `cargo test -p tern-tests`: run
//! `cargo build --release -p homeserver` first, or point `TERN_BIN` at one.

mod assertions;
mod client;
mod engine;
mod fcm;
mod federation;
mod fixtures;
mod gateway;
mod server;
mod services;
mod sse;
mod wait;

pub use assertions::*;
pub use client::Client;
pub use engine::TestDatabase;
pub use fcm::FakeFcm;
pub use federation::{
    event_id, free_port, insecure_https, FederatingTern, FederationOptions, Impersonator, Synapse,
    TlsFiles,
};
pub use fixtures::{public_room, public_room_with, room_of_two, text};
pub use gateway::{FakeGateway, GatewayMode};
pub use server::{server_binary, ServerOptions, TestServer};
pub use services::{redis_url, require_env};
pub use sse::{SseEvent, SseRequest, SseStream};
pub use wait::{eventually, eventually_within, Outcome, WAIT};

/// Prefix of every Client-Server API v3 path.
pub const V3: &str = "/_matrix/client/v3";

/// Password given to every account that [`Client::register`] creates.
pub const PASSWORD: &str = "correct horse battery staple";
