//! [`eventually`]: the one way tests wait for something to become true.
//!
//! A test never sleeps for a while and hopes: it names the condition it
//! needs and polls it until it holds or a deadline passes. Proving that
//! something did *not* happen is done with a barrier instead: wait for a
//! later event that must come after the one that must not, then look.

use std::fmt::Debug;
use std::time::{Duration, Instant};

/// How long [`eventually`] waits unless a test says otherwise: long enough
/// for a loaded CI machine, short enough that a hang fails the test.
pub const WAIT: Duration = Duration::from_secs(15);

/// How often a condition is looked at again.
const POLL: Duration = Duration::from_millis(50);

/// What a condition reports: done (with a value), or not yet (with what it
/// saw, for the failure message).
pub trait Outcome {
    type Done;
    fn into_result(self) -> Result<Self::Done, String>;
}

impl Outcome for bool {
    type Done = ();
    fn into_result(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".to_owned())
        }
    }
}

impl<T> Outcome for Option<T> {
    type Done = T;
    fn into_result(self) -> Result<T, String> {
        self.ok_or_else(|| "None".to_owned())
    }
}

impl<T, E: Debug> Outcome for Result<T, E> {
    type Done = T;
    fn into_result(self) -> Result<T, String> {
        self.map_err(|seen| format!("{seen:?}"))
    }
}

/// Polls `condition` every 50 ms until it is done (`true`, `Some(value)` or
/// `Ok(value)`) and returns the value; panics after [`WAIT`] with `what` and
/// the last thing the condition saw (`false`, `None` or `Err(seen)`).
pub async fn eventually<O: Outcome>(what: &str, condition: impl AsyncFnMut() -> O) -> O::Done {
    eventually_within(WAIT, what, condition).await
}

/// [`eventually`] with another deadline, for what the server does on a
/// timer of its own (leases, session timeouts).
pub async fn eventually_within<O: Outcome>(
    within: Duration,
    what: &str,
    mut condition: impl AsyncFnMut() -> O,
) -> O::Done {
    let deadline = Instant::now() + within;
    loop {
        let seen = match condition().await.into_result() {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; last saw {seen}"
        );
        tokio::time::sleep(POLL).await;
    }
}
