//! Requests in flight per destination (a gateway's URL, or FCM), so the
//! drain can leave a destination that has all it may have out of a round.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use super::MAX_PER_DESTINATION;

/// Requests in flight per destination.
#[derive(Default)]
pub(super) struct Destinations(Mutex<HashMap<String, usize>>);

/// One request's hold on its destination; given back when dropped.
pub(super) struct DestinationSlot {
    destinations: Arc<Destinations>,
    url: String,
}

impl Destinations {
    /// A slot for a request to `url`, unless it has all it may have.
    pub(super) fn try_take(self: &Arc<Self>, url: &str) -> Option<DestinationSlot> {
        let mut counts = self.0.lock();
        let count = counts.entry(url.to_owned()).or_default();
        if *count >= MAX_PER_DESTINATION {
            return None;
        }
        *count += 1;
        Some(DestinationSlot {
            destinations: self.clone(),
            url: url.to_owned(),
        })
    }

    /// The destinations with all the requests they may have.
    pub(super) fn busy(&self) -> Vec<String> {
        let counts = self.0.lock();
        counts
            .iter()
            .filter(|(_, &n)| n >= MAX_PER_DESTINATION)
            .map(|(url, _)| url.clone())
            .collect()
    }
}

impl Drop for DestinationSlot {
    fn drop(&mut self) {
        let mut counts = self.destinations.0.lock();
        if let Some(count) = counts.get_mut(&self.url) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.url);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_destination_gets_its_share_and_the_slots_come_back() {
        let destinations = Arc::new(Destinations::default());
        let held: Vec<_> = (0..MAX_PER_DESTINATION)
            .map(|_| destinations.try_take("https://slow.example").unwrap())
            .collect();
        assert!(destinations.try_take("https://slow.example").is_none());
        assert_eq!(destinations.busy(), ["https://slow.example"]);
        // Another destination is not held up.
        let other = destinations.try_take("fcm:v1").unwrap();
        drop(held);
        assert!(destinations.busy().is_empty());
        assert!(destinations.try_take("https://slow.example").is_some());
        drop(other);
    }
}
