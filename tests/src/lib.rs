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
//!
//! The binary is not built by `cargo test -p tern-tests`: run
//! `cargo build --release -p homeserver` first, or point `TERN_BIN` at one.

mod assertions;
mod client;
mod engine;
mod fcm;
mod gateway;
mod server;
mod sse;

pub use assertions::*;
pub use client::Client;
pub use fcm::FakeFcm;
pub use gateway::{FakeGateway, GatewayMode};
pub use server::{server_binary, ServerOptions, TestServer};
pub use sse::{SseEvent, SseRequest, SseStream};

/// Prefix of every Client-Server API v3 path.
pub const V3: &str = "/_matrix/client/v3";

/// Password given to every account that [`Client::register`] creates.
pub const PASSWORD: &str = "correct horse battery staple";
