//! The outside services some tests need. `scripts/test.sh` (the README's
//! test command) provides every one of them, so a test that finds one
//! missing fails with a message saying what to set; it never passes as if
//! it had run. (ScyllaDB, which cannot be installed here, is the exception
//! and lives in the server's own tests.)

/// The value of `var`; panics with what provides it when unset.
pub fn require_env(var: &str, provided_by: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: {provided_by}; run the suite with scripts/test.sh")
    })
}

/// Redis at `TERN_TEST_REDIS_URL`, or the local one `scripts/test.sh` starts.
pub fn redis_url() -> String {
    std::env::var("TERN_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}
