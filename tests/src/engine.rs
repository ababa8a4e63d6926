//! Which storage engine the servers under test run on.
//!
//! By default the embedded SQLite store in the data directory. With
//! `TERN_TEST_ENGINE=postgres` (and `TERN_TEST_POSTGRES_URL`, a role that may
//! create databases; `psql` on the PATH), every [`crate::TestServer`] gets a
//! PostgreSQL database of its own, named after its data directory so that a
//! restart finds the same data, and dropped with the server. The whole
//! black-box suite then runs on PostgreSQL unchanged. The tests that are
//! about PostgreSQL itself make their own [`TestDatabase`].

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::require_env;

/// A PostgreSQL database created for one test (or one test server) on the
/// server at `TERN_TEST_POSTGRES_URL`, dropped with this guard, also when
/// the test panics.
pub struct TestDatabase {
    admin_url: String,
    name: String,
}

impl TestDatabase {
    /// A new empty database whose name starts with `tern_{prefix}_`. Fails
    /// the test without `TERN_TEST_POSTGRES_URL`.
    pub fn create(prefix: &str) -> Self {
        static CREATED: AtomicUsize = AtomicUsize::new(0);
        let number = CREATED.fetch_add(1, Ordering::Relaxed);
        let name = format!("tern_{prefix}_{}_{number}", std::process::id());
        Self::create_named(name)
    }

    /// The database for `data_dir` when the suite runs on PostgreSQL: named
    /// after the directory, so a restarted server finds the same data.
    pub(crate) fn for_data_dir(data_dir: &Path) -> Option<Self> {
        if std::env::var("TERN_TEST_ENGINE").ok().as_deref() != Some("postgres") {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        data_dir.hash(&mut hasher);
        std::process::id().hash(&mut hasher);
        Some(Self::create_named(format!(
            "tern_bb_{:016x}",
            hasher.finish()
        )))
    }

    fn create_named(name: String) -> Self {
        let admin_url = require_env(
            "TERN_TEST_POSTGRES_URL",
            "a PostgreSQL role that may create databases (scripts/ensure-postgres.sh)",
        );
        let out = Command::new("psql")
            .args([
                admin_url.as_str(),
                "-qc",
                &format!("CREATE DATABASE {name}"),
            ])
            .output()
            .expect("run psql");
        assert!(
            out.status.success(),
            "creating {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { admin_url, name }
    }

    /// The admin URL with this database in its path.
    pub fn url(&self) -> String {
        let (base, query) = match self.admin_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (self.admin_url.as_str(), String::new()),
        };
        let (server, _) = base.rsplit_once('/').expect("URL has a database path");
        format!("{server}/{}{query}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // No assertion: a panic while a test is already panicking aborts.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = Command::new("psql")
            .args([self.admin_url.as_str(), "-qc", &sql])
            .output();
    }
}
