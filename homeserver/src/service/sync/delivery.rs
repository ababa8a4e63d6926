//! Delivery receipts (`tern.delivered`): a sync proves what the client
//! holds, and the rooms whose messages it now has get a receipt.

use std::collections::HashMap;

use parking_lot::Mutex;
use ruma_common::{OwnedUserId, UserId};

use super::SyncService;
use crate::service::rooms::Requester;
use crate::service::token::SyncToken;
use crate::store::StreamPos;
use ruma_events::room::member::MembershipState;

/// Per user, how far a client of theirs (on this node) proved it holds
/// everything, and how far its delivered receipts were recorded: the
/// push sender asks the first before pushing a held notification (an
/// invite or other state event gets no delivered receipt, but the client
/// that acknowledged it has it).
#[derive(Default)]
pub struct AckMarks {
    marks: Mutex<HashMap<OwnedUserId, Mark>>,
}

#[derive(Default, Clone, Copy)]
struct Mark {
    acked: StreamPos,
    receipted: StreamPos,
}

impl AckMarks {
    /// The user's acknowledged position (0 if none of their clients
    /// acknowledged here).
    pub fn upto(&self, user_id: &UserId) -> StreamPos {
        self.marks.lock().get(user_id).map_or(0, |m| m.acked)
    }

    /// A client of the user holds everything up to `upto`. With `receipts`
    /// (the user's memberships are at hand to record them), the receipts'
    /// mark moves too; returns where it was when it moved.
    fn acknowledge(&self, user_id: &UserId, upto: StreamPos, receipts: bool) -> Option<StreamPos> {
        let mut marks = self.marks.lock();
        let mark = match marks.get_mut(user_id) {
            Some(mark) => mark,
            None => marks.entry(user_id.to_owned()).or_default(),
        };
        mark.acked = mark.acked.max(upto);
        if !receipts || upto <= mark.receipted {
            return None;
        }
        Some(std::mem::replace(&mut mark.receipted, upto))
    }
}

impl SyncService {
    /// A sync from `since` proves the client holds everything up to it:
    /// record `tern.delivered` for each room that had messages (not state
    /// events) from others since the last proof. Runs in the background; the sync does not wait.
    pub(super) fn acknowledge_delivery(&self, who: &Requester, since: SyncToken) {
        let upto = since.events.min(self.cache.watermark());
        // Memberships are cached by the previous sync; without them, wait
        // for the next one rather than query here, leaving the receipts'
        // mark where it is so that sync's proof still covers these
        // messages (a message without a delivered receipt is pushed).
        let memberships = self.cache.memberships(&who.user_id);
        let Some(previous) = self
            .acks
            .acknowledge(&who.user_id, upto, memberships.is_some())
        else {
            return;
        };
        let Some(memberships) = memberships else {
            return;
        };
        let mut receipts = Vec::new();
        for m in memberships
            .iter()
            .filter(|m| m.membership == MembershipState::Join)
        {
            // The client holds everything up to `upto`: the latest message
            // cached is enough, even if the cache does not reach back to
            // the previous proof.
            let events = self.cache.cached_shared(&m.room_id, previous, upto);
            // Ticks are for messages: state events (joins, names) get none.
            let last = events
                .iter()
                .rev()
                .find(|e| e.sender != who.user_id && e.state_key.is_none());
            if let Some(last) = last {
                receipts.push((
                    m.room_id.clone(),
                    last.event_id.clone(),
                    last.sender.clone(),
                    last.stream,
                ));
            }
        }
        if receipts.is_empty() {
            return;
        }
        let service = self.receipts.clone();
        let rooms = self.sharing.clone();
        let user_id = who.user_id.clone();
        tokio::spawn(async move {
            if let Err(err) = service.mark_delivered(&rooms, &user_id, receipts).await {
                tracing::warn!(error = %err.message, "recording delivery failed");
            }
        });
    }
}
