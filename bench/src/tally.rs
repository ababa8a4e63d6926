//! Matching acknowledged sends against what each recipient's sync received:
//! the delivery latencies, and the losses the tool must shout about.

use std::collections::HashMap;

use crate::load::SAMPLE_LIMIT;

/// What the acknowledged sends came to in the recipients' syncs.
#[derive(Default)]
pub struct Tally {
    /// Send to arrival, per (message, recipient), in microseconds.
    pub delivery_us: Vec<u64>,
    /// Per message that reached every recipient: send to arrival at the last.
    pub all_recipients_us: Vec<u64>,
    pub lost: u64,
    pub lost_sample: Vec<String>,
}

/// `sends` yields each acknowledged message as `(id, send time in µs,
/// recipients)`, recipients being indexes into `arrivals` (per recipient:
/// message id -> arrival time in µs). `describe(id, recipient)` names a loss.
pub fn tally<R>(
    sends: impl Iterator<Item = (u64, u64, R)>,
    arrivals: &[&HashMap<u64, u64>],
    describe: impl Fn(u64, usize) -> String,
) -> Tally
where
    R: IntoIterator<Item = usize>,
{
    let mut t = Tally::default();
    for (k, sent_us, recipients) in sends {
        let mut last = Some(0u64);
        for r in recipients {
            match arrivals[r].get(&k) {
                Some(&at) => {
                    let us = at.saturating_sub(sent_us);
                    t.delivery_us.push(us);
                    last = last.map(|l| l.max(us));
                }
                None => {
                    last = None;
                    t.lost += 1;
                    if t.lost_sample.len() < SAMPLE_LIMIT {
                        t.lost_sample.push(describe(k, r));
                    }
                }
            }
        }
        t.all_recipients_us.extend(last);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_deliveries_losses_and_the_last_arrival() {
        let a: HashMap<u64, u64> = [(1, 110), (2, 250)].into();
        let b: HashMap<u64, u64> = [(1, 130)].into();
        let sends = vec![(1u64, 100u64, vec![0usize, 1]), (2, 200, vec![0, 1])];
        let t = tally(sends.into_iter(), &[&a, &b], |k, r| format!("{k}->{r}"));
        assert_eq!(t.delivery_us, vec![10, 30, 50]);
        assert_eq!(t.all_recipients_us, vec![30]);
        assert_eq!(t.lost, 1);
        assert_eq!(t.lost_sample, vec!["2->1".to_string()]);
    }
}
