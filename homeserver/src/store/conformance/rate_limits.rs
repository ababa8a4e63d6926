//! The `RateLimitStore` part of the conformance suite.

use std::sync::Arc;

use crate::store::RateLimitStore;

/// A shared token bucket: the burst, then a refusal with the wait, per key.
pub async fn rate_limit_store(store: Arc<dyn RateLimitStore>) {
    let key = format!("conf-{}", std::process::id());
    for _ in 0..3 {
        assert_eq!(store.take_token(&key, 3.0, 0.5).await.unwrap(), None);
    }
    let wait = store.take_token(&key, 3.0, 0.5).await.unwrap();
    assert!(wait.is_some_and(|ms| ms > 0 && ms <= 2_000), "{wait:?}");
    assert_eq!(
        store
            .take_token(&format!("{key}-other"), 3.0, 0.5)
            .await
            .unwrap(),
        None
    );
}
