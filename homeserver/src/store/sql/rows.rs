//! Rows to records, shared by every query that reads them.

use std::sync::Arc;

use ruma_common::OwnedEventId;
use serde_json::Value;
use sqlx::Row as _;

use super::engine::Row;
use crate::store::media::MediaRecord;
use crate::store::{
    parse_id, MembershipRecord, NewReceipt, PusherRecord, ReceiptRecord, StoreError, StoreResult,
    StoredEvent, TxnKey,
};

/// Columns every event query selects from `events e`, in the order
/// [`event`] reads.
pub(in super::super) const EVENT_COLUMNS: &str = "e.stream, e.event_id, e.room_id, e.sender, \
     e.type, e.state_key, e.pdu, e.txn_device, e.txn_id, e.visibility";

/// The columns [`receipt`] reads, in its order.
pub(super) const RECEIPT_COLUMNS: &str =
    "room_id, user_id, receipt_type, thread_id, event_id, event_stream, ts, stream, event_sender";

/// The columns [`pusher`] reads, in its order.
pub(super) const PUSHER_COLUMNS: &str = "user_id, app_id, pushkey, kind, app_display_name, \
     device_display_name, profile_tag, lang, data, device_id, created_ts";

/// The columns [`membership`] reads, in its order.
pub(super) const MEMBERSHIP_COLUMNS: &str = "room_id, user_id, membership, event_id, stream";

/// The columns [`media`] reads, in its order.
pub(super) const MEDIA_COLUMNS: &str =
    "media_id, uploader, content_type, filename, size, sha256, created_ts, pending_until_ts";

/// JSON stored as text: a value that does not parse is a corrupt record.
pub(in super::super) fn json(text: &str) -> StoreResult<Value> {
    serde_json::from_str(text).map_err(|e| StoreError::corrupt("stored JSON", e))
}

/// A text column holding an identifier, as its typed form.
pub(in super::super) fn id<T>(row: &Row, index: usize) -> StoreResult<T>
where
    T: TryFrom<String>,
    T::Error: std::error::Error + Send + Sync + 'static,
{
    parse_id(row.try_get(index)?)
}

pub(in super::super) fn event(row: &Row) -> StoreResult<StoredEvent> {
    let pdu: String = row.try_get(6)?;
    let txn_device: Option<String> = row.try_get(7)?;
    let txn_id: Option<String> = row.try_get(8)?;
    Ok(StoredEvent {
        stream: row.try_get(0)?,
        event_id: id(row, 1)?,
        room_id: id(row, 2)?,
        sender: id(row, 3)?,
        kind: row.try_get(4)?,
        state_key: row.try_get(5)?,
        pdu: Arc::new(json(&pdu)?),
        txn: txn_device.map(Into::into).zip(txn_id),
        visibility: row.try_get(9)?,
    })
}

pub(super) fn membership(row: &Row) -> StoreResult<MembershipRecord> {
    Ok(MembershipRecord {
        room_id: id(row, 0)?,
        user_id: id(row, 1)?,
        membership: id(row, 2)?,
        event_id: id(row, 3)?,
        stream: row.try_get(4)?,
    })
}

pub(super) fn receipt(row: &Row) -> StoreResult<ReceiptRecord> {
    // The primary key cannot hold NULL: "no thread" is stored as ''.
    let thread: String = row.try_get(3)?;
    Ok(ReceiptRecord {
        receipt: NewReceipt {
            room_id: id(row, 0)?,
            user_id: id(row, 1)?,
            receipt_type: row.try_get(2)?,
            thread_id: (!thread.is_empty()).then_some(thread),
            event_id: id(row, 4)?,
            event_sender: id(row, 8)?,
            event_stream: row.try_get(5)?,
            ts: row.try_get(6)?,
        },
        stream: row.try_get(7)?,
    })
}

pub(super) fn pusher(row: &Row) -> StoreResult<PusherRecord> {
    let data: String = row.try_get(8)?;
    Ok(PusherRecord {
        user_id: id(row, 0)?,
        app_id: row.try_get(1)?,
        pushkey: row.try_get(2)?,
        kind: row.try_get(3)?,
        app_display_name: row.try_get(4)?,
        device_display_name: row.try_get(5)?,
        profile_tag: row.try_get(6)?,
        lang: row.try_get(7)?,
        data: json(&data)?,
        device_id: row.try_get::<Option<String>, _>(9)?.map(Into::into),
        created_ts: row.try_get(10)?,
    })
}

pub(super) fn media(row: &Row) -> StoreResult<MediaRecord> {
    let size: Option<i64> = row.try_get(4)?;
    Ok(MediaRecord {
        media_id: row.try_get(0)?,
        uploader: row.try_get(1)?,
        content_type: row.try_get(2)?,
        filename: row.try_get(3)?,
        size: size
            .map(|s| u64::try_from(s).map_err(|e| StoreError::corrupt("media size", e)))
            .transpose()?,
        sha256: row.try_get(5)?,
        created_ts: row.try_get(6)?,
        pending_until_ts: row.try_get(7)?,
    })
}

/// A transaction id found: `(sender, device, txn)` and the event it made.
pub(in super::super) fn txn_hit(row: &Row) -> StoreResult<(TxnKey, OwnedEventId)> {
    Ok(((id(row, 0)?, id(row, 1)?, row.try_get(2)?), id(row, 3)?))
}
