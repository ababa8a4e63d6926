//! Throw-away databases for tests: one per test, created in the server at
//! `TERN_TEST_POSTGRES_URL` and dropped at the end. Without the variable
//! the test fails: `scripts/test.sh` (the README's test command) starts
//! PostgreSQL and sets it, so a missing one is a broken run, not a skip.

use std::str::FromStr;
use std::sync::Arc;

use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection, Executor};

use super::PgStore;

/// A database created for one test and dropped by [`TestDb::drop`].
pub struct TestDb {
    admin: PgConnectOptions,
    name: String,
}

impl TestDb {
    pub async fn create() -> Self {
        let url = std::env::var("TERN_TEST_POSTGRES_URL").unwrap_or_else(|_| {
            panic!(
                "TERN_TEST_POSTGRES_URL is not set: a PostgreSQL role that may create \
                 databases; run the suite with scripts/test.sh"
            )
        });
        let admin = PgConnectOptions::from_str(&url).expect("TERN_TEST_POSTGRES_URL");
        let name = format!("tern_conf_{:016x}", rand::thread_rng().gen::<u64>());
        let mut conn = admin.connect().await.expect("connect to PostgreSQL");
        conn.execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create test database");
        conn.close().await.ok();
        Self { admin, name }
    }

    pub async fn open(&self) -> Arc<PgStore> {
        let options = self.admin.clone().database(&self.name);
        Arc::new(PgStore::open_with(options, 8).await.expect("open store"))
    }

    pub async fn drop(self) {
        let mut conn: PgConnection = self.admin.connect().await.expect("connect");
        conn.execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
            .await
            .expect("drop test database");
    }
}
