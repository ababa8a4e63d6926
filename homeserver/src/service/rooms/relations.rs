//! Relations and threads: `/relations`, `/threads`, and the summaries
//! bundled with events (`unsigned.m.relations`) wherever events are served.

use std::collections::HashMap;

use ruma_common::{EventId, OwnedEventId, RoomId};
use serde_json::{json, Map, Value};

use super::{Requester, RoomService};
use crate::service::error::ServiceResult;
use crate::service::pdu::client_event_for;
use crate::store::{Direction, RelationQuery, StoredEvent, StreamPos};

/// Bundled aggregations by the event they belong to.
pub type Bundles = HashMap<OwnedEventId, Value>;

/// A page of `/relations`.
pub struct RelationsPage {
    pub events: Vec<StoredEvent>,
    /// Where the next page starts; `None` when this one was not full.
    pub next: Option<StreamPos>,
}

impl RoomService {
    /// Events relating to `query.target`, which the user must be able to
    /// see; relations they may not see are left out.
    pub async fn relations(
        &self,
        who: &Requester,
        query: RelationQuery<'_>,
    ) -> ServiceResult<RelationsPage> {
        self.get_event(&who.user_id, query.room_id, query.target)
            .await?;
        let viewer = self.viewer(query.room_id, &who.user_id).await?;
        let mut events = self.store.relations(&query).await?;
        let full = events.len() == query.limit;
        // The next page starts past the last event, as `/messages` tokens do.
        let next = events.last().filter(|_| full).map(|e| match query.dir {
            Direction::Backward => e.stream - 1,
            Direction::Forward => e.stream,
        });
        events.retain(|e| viewer.can_see(e));
        Ok(RelationsPage { events, next })
    }

    /// A room's threads, most recently active first: their roots the user
    /// can see, and where the next page starts.
    pub async fn threads(
        &self,
        who: &Requester,
        room_id: &RoomId,
        participated_only: bool,
        before: Option<StreamPos>,
        limit: usize,
    ) -> ServiceResult<(Vec<StoredEvent>, Option<StreamPos>)> {
        let viewer = self.reader(room_id, &who.user_id).await?;
        let participant = participated_only.then_some(who.user_id.as_ref());
        let roots = self
            .store
            .threads(room_id, participant, before, limit)
            .await?;
        let next = roots
            .last()
            .filter(|_| roots.len() == limit)
            .map(|(_, at)| *at);
        let order: HashMap<OwnedEventId, usize> = roots
            .iter()
            .enumerate()
            .map(|(i, (root, _))| (root.clone(), i))
            .collect();
        let ids: Vec<OwnedEventId> = roots.into_iter().map(|(root, _)| root).collect();
        let mut events = self.store.get_events(&ids).await?;
        events.retain(|e| e.room_id == room_id && viewer.can_see(e));
        events.sort_by_key(|e| order.get(&e.event_id).copied());
        Ok((events, next))
    }

    /// [`Self::bundles`] for events of one room, as the user may see it.
    pub async fn bundles_in_room<'e>(
        &self,
        who: &Requester,
        room_id: &RoomId,
        events: impl IntoIterator<Item = &'e StoredEvent>,
        now: i64,
    ) -> ServiceResult<Bundles> {
        let viewer = self.viewer(room_id, &who.user_id).await?;
        self.bundles(who, events, |e| viewer.can_see(e), now).await
    }

    /// The summaries to bundle with `events` for `who`: thread summaries,
    /// the newest edit by the original sender, and references.
    ///
    /// `visible` says which related events the reader may see (a former
    /// member does not see what came after they left): others are not
    /// bundled.
    pub async fn bundles<'e>(
        &self,
        who: &Requester,
        events: impl IntoIterator<Item = &'e StoredEvent>,
        visible: impl Fn(&StoredEvent) -> bool,
        now: i64,
    ) -> ServiceResult<Bundles> {
        // State events bundle nothing.
        let sender_of: HashMap<&EventId, &StoredEvent> = events
            .into_iter()
            .filter(|e| e.state_key.is_none())
            .map(|e| (&*e.event_id, e))
            .collect();
        if sender_of.is_empty() {
            return Ok(Bundles::new());
        }
        let targets: Vec<OwnedEventId> = sender_of.keys().map(|id| (*id).to_owned()).collect();
        let summaries = self
            .store
            .relation_summaries(&targets, &who.user_id)
            .await?;
        let mut bundles: HashMap<OwnedEventId, Map<String, Value>> = HashMap::new();
        let format = |e: &StoredEvent| client_event_for(e, &who.user_id, &who.device_id, now, true);
        for thread in summaries.threads.into_iter().filter(|t| visible(&t.latest)) {
            let root = sender_of.get::<EventId>(&thread.root);
            let participated = thread.participated || root.is_some_and(|r| r.sender == who.user_id);
            let summary = json!({
                "latest_event": format(&thread.latest),
                "count": thread.count,
                "current_user_participated": participated,
            });
            bundles
                .entry(thread.root)
                .or_default()
                .insert("m.thread".into(), summary);
        }
        for (target, edit) in summaries.edits.into_iter().filter(|(_, e)| visible(e)) {
            // Only the original sender may edit an event.
            let by_sender = sender_of
                .get::<EventId>(&target)
                .is_some_and(|t| t.sender == edit.sender);
            let entry = bundles.entry(target).or_default();
            if by_sender && !entry.contains_key("m.replace") {
                entry.insert("m.replace".into(), format(&edit));
            }
        }
        for (target, reference) in summaries.references {
            let entry = bundles.entry(target).or_default();
            let chunk = entry
                .entry("m.reference")
                .or_insert_with(|| json!({"chunk": []}));
            if let Some(list) = chunk["chunk"].as_array_mut() {
                list.push(json!({ "event_id": reference }));
            }
        }
        Ok(bundles
            .into_iter()
            .filter(|(_, b)| !b.is_empty())
            .map(|(id, b)| (id, Value::Object(b)))
            .collect())
    }
}

/// Puts each event's bundle into its `unsigned.m.relations`.
pub fn attach_bundles(events: &mut [Value], bundles: &Bundles) {
    if bundles.is_empty() {
        return;
    }
    for event in events {
        let Some(id) = event["event_id"].as_str() else {
            continue;
        };
        let Some(bundle) = EventId::parse(id).ok().and_then(|id| bundles.get(&id)) else {
            continue;
        };
        if let Some(object) = event.as_object_mut() {
            let unsigned = object.entry("unsigned").or_insert_with(|| json!({}));
            unsigned["m.relations"] = bundle.clone();
        }
    }
}
