//! What encrypting clients sync: the device's to-device messages, whose
//! device lists changed (`device_lists`), and the device's one-time and
//! fallback key counts.

use std::collections::{BTreeMap, HashSet};

use ruma_common::OwnedUserId;

use super::join::Sharing;
use super::plan::{Pass, Plan};
use super::response::DeviceLists;
use super::SyncService;
use crate::service::e2ee::to_device::ToDeviceEvent;
use crate::service::error::ServiceResult;
use crate::store::StreamPos;

/// The sections of one pass.
pub(super) struct E2eeSections {
    pub to_device: Vec<ToDeviceEvent>,
    /// Where the to-device stream stands after this pass (short of `upto`
    /// when the inbox held more than one response carries).
    pub to_device_upto: StreamPos,
    pub device_lists: DeviceLists,
    pub one_time_keys_count: BTreeMap<String, u64>,
    pub unused_fallback_key_types: Vec<String>,
}

impl SyncService {
    pub(super) async fn e2ee_sections(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
        sharing: &Sharing,
    ) -> ServiceResult<E2eeSections> {
        let (who, upto) = (pass.who, pass.upto);
        let since = pass.since.unwrap_or_default();
        let inbox = self
            .e2ee
            .inbox(
                &who.user_id,
                &who.device_id,
                since.to_device,
                upto.to_device,
            )
            .await?;
        let device_lists = match pass.since {
            Some(since) => {
                self.device_lists(pass, plan, sharing, since.device_lists)
                    .await?
            }
            // An initial sync has no changes: the client queries what it needs.
            None => DeviceLists::default(),
        };
        Ok(E2eeSections {
            to_device: inbox.events,
            to_device_upto: inbox.upto,
            device_lists,
            one_time_keys_count: BTreeMap::new(),
            unused_fallback_key_types: Vec::new(),
        })
    }

    /// The device's key counts, read only for a response that goes out (a
    /// long-poll with nothing new computes again after waiting).
    pub(super) async fn add_key_counts(
        &self,
        pass: &Pass<'_>,
        sections: &mut E2eeSections,
    ) -> ServiceResult<()> {
        let (counts, fallbacks) = self.e2ee.key_counts(pass.who).await?;
        sections.one_time_keys_count = counts;
        sections.unused_fallback_key_types = fallbacks;
        Ok(())
    }

    /// `changed`: users whose devices changed and who share a room with the
    /// user (or are the user), and those who came to share one (their keys
    /// are new to the client). `left`: those who no longer share any.
    async fn device_lists(
        &self,
        pass: &Pass<'_>,
        plan: &Plan<'_>,
        sharing: &Sharing,
        since: StreamPos,
    ) -> ServiceResult<DeviceLists> {
        let me = &pass.who.user_id;
        let mut changed: HashSet<OwnedUserId> = self
            .e2ee
            .device_list_changes(me, since, pass.upto.device_lists)
            .await?
            .into_iter()
            .collect();
        changed.extend(sharing.newly_shared.iter().cloned());
        let mut left = Vec::new();
        if sharing.someone_left || !plan.leaves.is_empty() {
            left = self
                .e2ee
                .parted(me, pass.since_events, pass.upto.events)
                .await?;
            for user in &left {
                changed.remove(user);
            }
        }
        let mut changed: Vec<OwnedUserId> = changed.into_iter().collect();
        changed.sort();
        left.sort();
        Ok(DeviceLists { changed, left })
    }
}
