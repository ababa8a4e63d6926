//! Per-user (or per-address) token buckets for the actions spammers repeat:
//! sending, registering, logging in.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::error::{ErrorKind, ServiceError, ServiceResult};
use crate::store::RateLimitStore;

/// Keys remembered in memory before the full buckets are dropped (a full
/// bucket carries no information, so dropping it is harmless).
const MAX_LOCAL_KEYS: usize = 100_000;

/// Which budget an action draws from: `(burst, refill per second)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Message,
    Register,
    Login,
}

impl Action {
    fn budget(self) -> (f64, f64) {
        match self {
            Action::Message => (50.0, 10.0),
            Action::Register => (5.0, 0.2),
            Action::Login => (10.0, 0.5),
        }
    }

    /// The same budget as a GCRA quota: one token every `1 / rate` seconds,
    /// at most `burst` saved up.
    fn quota(self) -> Quota {
        let (burst, rate) = self.budget();
        let burst = NonZeroU32::new(burst as u32).expect("bursts are positive");
        Quota::with_period(Duration::from_secs_f64(1.0 / rate))
            .expect("rates are positive")
            .allow_burst(burst)
    }
}

/// This process's buckets, one keyed limiter per action.
struct LocalBuckets {
    message: DefaultKeyedRateLimiter<String>,
    register: DefaultKeyedRateLimiter<String>,
    login: DefaultKeyedRateLimiter<String>,
}

impl LocalBuckets {
    fn new() -> Self {
        Self {
            message: DefaultKeyedRateLimiter::keyed(Action::Message.quota()),
            register: DefaultKeyedRateLimiter::keyed(Action::Register.quota()),
            login: DefaultKeyedRateLimiter::keyed(Action::Login.quota()),
        }
    }

    fn of(&self, action: Action) -> &DefaultKeyedRateLimiter<String> {
        match action {
            Action::Message => &self.message,
            Action::Register => &self.register,
            Action::Login => &self.login,
        }
    }
}

pub struct RateLimiter {
    enabled: bool,
    local: LocalBuckets,
    /// In a cluster the buckets live in the shared ephemeral engine (Redis),
    /// so spreading requests over nodes buys no extra budget.
    shared: Option<Arc<dyn RateLimitStore>>,
}

impl RateLimiter {
    /// A limiter over this process's buckets, or over `shared` ones that
    /// every node of a cluster takes from.
    pub fn new(enabled: bool, shared: Option<Arc<dyn RateLimitStore>>) -> Self {
        Self {
            enabled,
            local: LocalBuckets::new(),
            shared,
        }
    }

    /// Takes one token for `key`, or says how long to wait.
    pub async fn check(&self, action: Action, key: &str) -> ServiceResult<()> {
        if !self.enabled {
            return Ok(());
        }
        if let Some(shared) = &self.shared {
            let (burst, rate) = action.budget();
            let bucket = format!("{action:?}:{key}");
            return match shared.take_token(&bucket, burst, rate).await {
                Ok(None) => Ok(()),
                Ok(Some(retry_after_ms)) => Err(limit_exceeded(retry_after_ms)),
                // Redis away: refusing everyone would turn an outage of the
                // limiter into an outage of the service.
                Err(err) => {
                    tracing::warn!(%err, "shared rate limit unavailable");
                    Ok(())
                }
            };
        }
        self.check_local(action, key)
    }

    fn check_local(&self, action: Action, key: &str) -> ServiceResult<()> {
        let limiter = self.local.of(action);
        if limiter.len() > MAX_LOCAL_KEYS {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            // Rounded up, and at least 1: a client told 0 would retry at once.
            limit_exceeded((wait.as_micros().div_ceil(1000) as u64).max(1))
        })
    }
}

fn limit_exceeded(retry_after_ms: u64) -> ServiceError {
    ServiceError::new(
        ErrorKind::LimitExceeded { retry_after_ms },
        "Too many requests",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_retry_after() {
        let limiter = RateLimiter::new(true, None);
        for _ in 0..5 {
            limiter.check_local(Action::Register, "1.2.3.4").unwrap();
        }
        let err = limiter
            .check_local(Action::Register, "1.2.3.4")
            .unwrap_err();
        match err.kind {
            ErrorKind::LimitExceeded { retry_after_ms } => assert!(retry_after_ms > 0),
            other => panic!("unexpected {other:?}"),
        }
        limiter.check_local(Action::Register, "5.6.7.8").unwrap();
        // Each action has its own budget.
        limiter.check_local(Action::Login, "1.2.3.4").unwrap();
    }

    #[tokio::test]
    async fn disabled_never_refuses() {
        let limiter = RateLimiter::new(false, None);
        for _ in 0..1000 {
            limiter.check(Action::Register, "x").await.unwrap();
        }
    }
}
