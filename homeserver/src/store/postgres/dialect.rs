//! What PostgreSQL's SQL says differently, for the relational core (`../sql`).

use sqlx::{Postgres, Transaction};

use crate::store::{NewEvent, NewReceipt, OutboxPush, StoreError, StoreResult};

/// A list bound as one parameter: a `text[]`.
pub(super) type List<'a> = Vec<&'a str>;

pub(super) fn list<T: AsRef<str>>(items: &[T]) -> StoreResult<List<'_>> {
    Ok(items.iter().map(AsRef::as_ref).collect())
}

/// `column` is one of the [`list`] bound at `param`.
pub(super) fn in_list(column: &str, param: &str) -> String {
    format!("{column} = ANY({param}::text[])")
}

/// Stores account data at the next position: one statement, and bumping the
/// counter locks its row until commit, so positions are gap-free and commit
/// in order across processes. Binds user, room, type, content.
pub(super) const INSERT_ACCOUNT_DATA: &str =
    "WITH p AS (UPDATE stream_positions SET pos = pos + 1 \
     WHERE name = 'account_data' RETURNING pos) \
     INSERT INTO account_data (user_id, room_id, type, content, stream) \
     SELECT $1, $2, $3, $4, p.pos FROM p \
     ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, \
     stream = excluded.stream RETURNING stream";

/// Ordering that compares ids byte by byte, as SQLite does, whatever the
/// database's locale.
pub(super) const BYTE_ORDER: &str = " COLLATE \"C\"";

// The PDU is stored as text; jsonb cannot hold U+0000, which a JSON string
// may escape as `\u0000`, so each read below swaps that escape for `\u0020`
// before the cast (as the `events_relates_to` index does): six characters
// for six, valid JSON either way, and no event can make a query fail.

/// The membership in an `m.room.member` event's stored PDU (text, not jsonb).
pub(super) const PDU_MEMBERSHIP: &str =
    "(replace(pdu, '\\u0000', '\\u0020')::jsonb) -> 'content' ->> 'membership'";

/// The display name in the stored PDU `e.pdu` of an `m.room.member` event.
pub(super) const PDU_DISPLAYNAME: &str =
    "(replace(e.pdu, '\\u0000', '\\u0020')::jsonb) -> 'content' ->> 'displayname'";

/// The join rule in the stored PDU `e.pdu` of an `m.room.join_rules` event.
pub(super) const PDU_JOIN_RULE: &str =
    "(replace(e.pdu, '\\u0000', '\\u0020')::jsonb) -> 'content' ->> 'join_rule'";

/// The event `e` relates to (as the `events_relates_to` index has it).
pub(super) const RELATES_TO: &str =
    "((replace(e.pdu, '\\u0000', '\\u0020')::jsonb) -> 'content' -> 'm.relates_to' ->> 'event_id')";

/// The kind of relation of `e` (`m.thread`, `m.replace`...).
pub(super) const REL_TYPE: &str =
    "((replace(e.pdu, '\\u0000', '\\u0020')::jsonb) -> 'content' -> 'm.relates_to' ->> 'rel_type')";

/// The column that orders pushers as they were inserted.
pub(super) const INSERTION_ORDER: &str = "seq";

/// Row locks for a claim: nodes draining at once take different rows.
pub(super) const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

/// Queues notifications inside `tx`: one statement for the whole list,
/// arrays zipped by `unnest`, in the order given.
pub(super) async fn insert_outbox(
    tx: &mut Transaction<'_, Postgres>,
    pushes: Vec<OutboxPush>,
) -> StoreResult<()> {
    let mut users = Vec::with_capacity(pushes.len());
    let mut apps = Vec::with_capacity(pushes.len());
    let mut keys = Vec::with_capacity(pushes.len());
    let mut urls = Vec::with_capacity(pushes.len());
    let mut bodies = Vec::with_capacity(pushes.len());
    let mut due = Vec::with_capacity(pushes.len());
    let mut hold_rooms = Vec::with_capacity(pushes.len());
    let mut hold_streams = Vec::with_capacity(pushes.len());
    for push in pushes {
        users.push(String::from(push.user_id));
        apps.push(push.app_id);
        keys.push(push.pushkey);
        urls.push(push.url);
        bodies.push(push.body.to_string());
        due.push(push.due_ts);
        let (room, stream) = push.unless_received.unzip();
        hold_rooms.push(room.map(String::from));
        hold_streams.push(stream);
    }
    sqlx::query(
        "INSERT INTO push_outbox \
           (user_id, app_id, pushkey, url, body, next_ts, hold_room, hold_stream) \
         SELECT u, a, k, url, b, d, hr, hs FROM \
         unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], \
                $7::text[], $8::bigint[]) \
         WITH ORDINALITY AS t(u, a, k, url, b, d, hr, hs, ord) ORDER BY ord",
    )
    .bind(&users)
    .bind(&apps)
    .bind(&keys)
    .bind(&urls)
    .bind(&bodies)
    .bind(&due)
    .bind(&hold_rooms)
    .bind(&hold_streams)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// PostgreSQL text cannot hold NUL: the events' text columns are checked
/// before they are queued. (JSON columns need no check: serialised JSON
/// escapes NUL as `\u0000`.)
pub(super) fn check_events(events: &[NewEvent]) -> StoreResult<()> {
    for e in events {
        let txn = e.txn.iter().flat_map(|(d, t)| [d.as_str(), t.as_str()]);
        let redacts = e.redaction.iter().map(|(target, _)| target.as_str());
        let optional = [
            e.state_key.as_deref(),
            e.membership.as_ref().map(|m| m.as_str()),
        ];
        let ids = [e.event_id.as_str(), e.room_id.as_str(), e.sender.as_str()];
        reject_nul(
            ids.into_iter()
                .chain([e.kind.as_str(), e.visibility.as_str()])
                .chain(optional.into_iter().flatten())
                .chain(txn)
                .chain(redacts),
        )?;
    }
    Ok(())
}

/// [`check_events`] for receipts.
pub(super) fn check_receipts(receipts: &[NewReceipt]) -> StoreResult<()> {
    for r in receipts {
        let text = [
            r.room_id.as_str(),
            r.user_id.as_str(),
            &r.receipt_type,
            r.event_id.as_str(),
            r.event_sender.as_str(),
        ];
        reject_nul(text.into_iter().chain(r.thread_id.as_deref()))?;
    }
    Ok(())
}

fn reject_nul<'a>(values: impl IntoIterator<Item = &'a str>) -> StoreResult<()> {
    match values.into_iter().any(|v| v.contains('\0')) {
        true => Err(StoreError::invalid("text contains a NUL character")),
        false => Ok(()),
    }
}
