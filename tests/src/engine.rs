//! Which storage engine the servers under test run on.
//!
//! By default the embedded SQLite store in the data directory. With
//! `TERN_TEST_ENGINE=postgres` (and `TERN_TEST_POSTGRES_URL`, a role that may
//! create databases; `psql` on the PATH), every [`crate::TestServer`] gets a
//! PostgreSQL database of its own, named after its data directory so that a
//! restart finds the same data, and dropped with the server. The whole
//! black-box suite then runs on PostgreSQL unchanged.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::process::Command;

/// A PostgreSQL database that one test server keeps its data in.
pub(crate) struct ServerDatabase {
    admin_url: String,
    name: String,
}

impl ServerDatabase {
    /// The database for `data_dir` when the suite runs on PostgreSQL.
    pub(crate) fn for_data_dir(data_dir: &Path) -> Option<Self> {
        if std::env::var("TERN_TEST_ENGINE").ok().as_deref() != Some("postgres") {
            return None;
        }
        let admin_url = std::env::var("TERN_TEST_POSTGRES_URL")
            .expect("TERN_TEST_ENGINE=postgres needs TERN_TEST_POSTGRES_URL");
        let mut hasher = DefaultHasher::new();
        data_dir.hash(&mut hasher);
        std::process::id().hash(&mut hasher);
        let name = format!("tern_bb_{:016x}", hasher.finish());
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
        Some(Self { admin_url, name })
    }

    /// The admin URL with this database in its path.
    pub(crate) fn url(&self) -> String {
        let (base, query) = match self.admin_url.split_once('?') {
            Some((base, query)) => (base, format!("?{query}")),
            None => (self.admin_url.as_str(), String::new()),
        };
        let (server, _) = base.rsplit_once('/').expect("URL has a database path");
        format!("{server}/{}{query}", self.name)
    }
}

impl Drop for ServerDatabase {
    fn drop(&mut self) {
        // No assertion: a panic while a test is already panicking aborts.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let _ = Command::new("psql")
            .args([self.admin_url.as_str(), "-qc", &sql])
            .output();
    }
}
