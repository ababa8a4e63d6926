//! Three homeserver processes as one deployment: PostgreSQL for the store,
//! Redis for typing and presence, a Kafka-protocol broker for the cluster
//! bus (librdkafka's mock cluster, `tern-kafka-mock`).
//!
//! - `chat`: users on different nodes chat, with receipts, typing and
//!   presence.
//! - `kill`: a node killed with `kill -9` mid-load loses nothing that was
//!   acknowledged and repeats nothing, in sync or in push notifications,
//!   and when it comes back its consumers resume without gaps or repeats.
//! - `auth`: power changes sent to two nodes at once never let in an event
//!   the rules refuse.
//!
//! Needs `TERN_TEST_POSTGRES_URL` (a role that may create databases) and
//! Redis at `TERN_TEST_REDIS_URL` (default the local one); `scripts/test.sh`
//! provides both, and without them the tests fail.

mod auth;
mod chat;
mod kill;
mod stack;
