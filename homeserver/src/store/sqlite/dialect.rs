//! What SQLite's SQL says differently, for the relational core (`../sql`).

use sqlx::{Sqlite, Transaction};

use crate::store::{NewEvent, NewReceipt, OutboxPush, StoreError, StoreResult};

/// A list bound as one parameter: SQLite has no arrays, so a JSON array
/// that `json_each` unpacks.
pub(super) type List = String;

pub(super) fn list<T: AsRef<str>>(items: &[T]) -> StoreResult<List> {
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    serde_json::to_string(&items).map_err(|e| StoreError::corrupt("list parameter", e))
}

/// `column` is one of the [`list`] bound at `param`.
pub(super) fn in_list(column: &str, param: &str) -> String {
    format!("{column} IN (SELECT value FROM json_each({param}))")
}

/// Stores account data at the next position: one statement, so SQLite's
/// single writer makes the MAX()+1 race free. Binds user, room, type, content.
pub(super) const INSERT_ACCOUNT_DATA: &str =
    "INSERT INTO account_data (user_id, room_id, type, content, stream) VALUES \
     ($1, $2, $3, $4, (SELECT COALESCE(MAX(stream), 0) + 1 FROM account_data)) \
     ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, \
     stream = excluded.stream RETURNING stream";

/// Ordering that compares ids byte by byte: SQLite's default (BINARY).
pub(super) const BYTE_ORDER: &str = "";

/// The membership in an `m.room.member` event's stored PDU.
pub(super) const PDU_MEMBERSHIP: &str = "json_extract(pdu, '$.content.membership')";

/// The display name in the stored PDU `e.pdu` of an `m.room.member` event.
pub(super) const PDU_DISPLAYNAME: &str = "json_extract(e.pdu, '$.content.displayname')";

/// The join rule in the stored PDU `e.pdu` of an `m.room.join_rules` event.
pub(super) const PDU_JOIN_RULE: &str = "json_extract(e.pdu, '$.content.join_rule')";

/// The event `e` relates to (as the `events_relates_to` index has it).
pub(super) const RELATES_TO: &str = "json_extract(e.pdu, '$.content.\"m.relates_to\".event_id')";

/// The kind of relation of `e` (`m.thread`, `m.replace`...).
pub(super) const REL_TYPE: &str = "json_extract(e.pdu, '$.content.\"m.relates_to\".rel_type')";

/// The column that orders pushers as they were inserted.
pub(super) const INSERTION_ORDER: &str = "rowid";

/// Row locks for a claim: none needed, one writer at a time.
pub(super) const SKIP_LOCKED: &str = "";

/// Queues notifications inside `tx`: one statement per row, which costs
/// SQLite nothing (no round trips), in the order given.
pub(super) async fn insert_outbox(
    tx: &mut Transaction<'_, Sqlite>,
    pushes: Vec<OutboxPush>,
) -> StoreResult<()> {
    for push in pushes {
        let (hold_room, hold_stream) = push.unless_received.unzip();
        sqlx::query(
            "INSERT INTO push_outbox \
               (user_id, app_id, pushkey, url, body, next_ts, hold_room, hold_stream) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(push.user_id.as_str())
        .bind(&push.app_id)
        .bind(&push.pushkey)
        .bind(&push.url)
        .bind(push.body.to_string())
        .bind(push.due_ts)
        .bind(hold_room.as_ref().map(|r| r.as_str()))
        .bind(hold_stream)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// SQLite stores any text: nothing to check before queueing.
pub(super) fn check_events(_events: &[NewEvent]) -> StoreResult<()> {
    Ok(())
}

/// SQLite stores any text: nothing to check before queueing.
pub(super) fn check_receipts(_receipts: &[NewReceipt]) -> StoreResult<()> {
    Ok(())
}
