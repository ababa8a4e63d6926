//! The shared services of one cluster test: a PostgreSQL database, a Redis
//! key prefix, a Kafka-protocol broker (librdkafka's mock cluster,
//! `tern-kafka-mock`) and a data directory the nodes share (and with it
//! the signing key). All removed again when the test ends.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use serde_json::Value;
use tern_tests::{redis_url, Client, ServerOptions, TestDatabase, TestServer};

pub struct Stack {
    broker: Child,
    brokers: String,
    database: TestDatabase,
    redis_prefix: String,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the broker and creates an empty database. Fails the test
    /// without `TERN_TEST_POSTGRES_URL` (`scripts/test.sh` sets it).
    pub fn start(name: &str) -> Self {
        let database = TestDatabase::create(name);
        let mut broker = Command::new(env!("CARGO_BIN_EXE_tern-kafka-mock"))
            .args(["tern.events", "8"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start tern-kafka-mock");
        let mut line = String::new();
        BufReader::new(broker.stdout.take().expect("broker stdout"))
            .read_line(&mut line)
            .expect("read the broker's address");
        assert!(
            !line.trim().is_empty(),
            "tern-kafka-mock printed no address"
        );
        Stack {
            broker,
            brokers: line.trim().to_owned(),
            database,
            redis_prefix: format!("tern-cluster-{name}-{}:", std::process::id()),
            dir: tempfile::tempdir().expect("data dir"),
        }
    }

    fn options(&self) -> ServerOptions {
        ServerOptions {
            config_toml: Some(format!(
                "storage = \"postgres\"\n\
                 [postgres]\nurl = \"{}\"\n\
                 [redis]\nurl = \"{}\"\nkey_prefix = \"{}\"\n\
                 [kafka]\nbrokers = \"{}\"\ntopic = \"tern.events\"\npartitions = 8\n",
                self.database.url(),
                redis_url(),
                self.redis_prefix,
                self.brokers
            )),
            env: vec![("TERN_PRESENCE_OFFLINE_MS".into(), "1000".into())],
            ..ServerOptions::default()
        }
    }

    /// Three nodes on one data directory, so they share the signing key.
    pub async fn nodes(&self) -> Vec<TestServer> {
        let first = TestServer::start_in(self.dir.path(), self.options()).await;
        let second = TestServer::start_in(self.dir.path(), self.options()).await;
        let third = TestServer::start_in(self.dir.path(), self.options()).await;
        vec![first, second, third]
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.broker.kill();
        let _ = self.broker.wait();
        if let Ok(client) = redis::Client::open(redis_url()) {
            if let Ok(mut conn) = client.get_connection() {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{}*", self.redis_prefix))
                    .query(&mut conn)
                    .unwrap_or_default();
                if !keys.is_empty() {
                    let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
                }
            }
        }
        // The database goes with `self.database`.
    }
}

/// The ids of the `m.room.message` events among `events`.
pub fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| e["event_id"].as_str().unwrap().to_owned())
        .collect()
}

/// The room's message ids as one node serves its history.
pub async fn history_ids(client: &Client, room: &str) -> Vec<String> {
    ids(&client.room_history(room).await)
}
