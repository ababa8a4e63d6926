//! Per-user (or per-address) token buckets for the actions spammers repeat:
//! sending, registering, logging in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::error::{ErrorKind, ServiceError, ServiceResult};
use crate::store::Ephemeral;

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
}

pub struct RateLimiter {
    enabled: bool,
    buckets: Mutex<HashMap<(Action, String), (f64, Instant)>>,
    /// In a cluster the buckets live in the shared ephemeral engine (Redis),
    /// so spreading requests over nodes buys no extra budget.
    shared: Option<Arc<dyn Ephemeral>>,
}

impl RateLimiter {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            buckets: Mutex::new(HashMap::new()),
            shared: None,
        }
    }

    /// A limiter whose buckets every node of a cluster shares.
    pub fn shared(enabled: bool, ephemeral: Arc<dyn Ephemeral>) -> Self {
        Self {
            shared: Some(ephemeral),
            ..Self::new(enabled)
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
                Ok(Some(retry_after_ms)) => Err(ServiceError::new(
                    ErrorKind::LimitExceeded { retry_after_ms },
                    "Too many requests",
                )),
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
        let (burst, rate) = action.budget();
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("rate limit lock");
        if buckets.len() > 100_000 {
            // Full buckets carry no information: dropping them is harmless.
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * rate < burst
            });
        }
        let (tokens, at) = buckets
            .entry((action, key.to_owned()))
            .or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let retry_after_ms = ((1.0 - *tokens) / rate * 1000.0).ceil() as u64;
            Err(ServiceError::new(
                ErrorKind::LimitExceeded { retry_after_ms },
                "Too many requests",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_refuses_with_retry_after() {
        let limiter = RateLimiter::new(true);
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
    }

    #[tokio::test]
    async fn disabled_never_refuses() {
        let limiter = RateLimiter::new(false);
        for _ in 0..1000 {
            limiter.check(Action::Register, "x").await.unwrap();
        }
    }
}
