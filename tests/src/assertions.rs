//! Helpers for asserting on Matrix responses and building URLs.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// Everything but RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment or query value (everything but unreserved
/// characters), so `#alias:server`, `$event` and JSON filters survive the URL.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The `errcode` of an error body, or `""` if there is none.
pub fn errcode(body: &Value) -> &str {
    body["errcode"].as_str().unwrap_or("")
}

/// Asserts a Matrix error: the HTTP status and the `errcode`, plus a string `error`.
#[track_caller]
pub fn assert_error(response: &(u16, Value), status: u16, code: &str) {
    assert_error_for("request", response, status, code);
}

/// [`assert_error`] that names the input in the failure message, for loops.
#[track_caller]
pub fn assert_error_for(what: &str, response: &(u16, Value), status: u16, code: &str) {
    let (got_status, body) = response;
    assert!(
        *got_status == status && errcode(body) == code,
        "{what}: expected {status} {code}, got {got_status} {body}"
    );
    assert!(
        body["error"].is_string(),
        "Matrix errors carry a human-readable `error` string, got {body}"
    );
}

/// Asserts a 200 and returns the body.
#[track_caller]
pub fn assert_ok(response: (u16, Value)) -> Value {
    let (status, body) = response;
    assert_eq!(status, 200, "expected 200, got {status} {body}");
    body
}

/// Timeline events of `room` in the `rooms.join` section of a sync response.
pub fn joined_timeline(sync: &Value, room: &str) -> Vec<Value> {
    sync["rooms"]["join"][room]["timeline"]["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Bodies of the `m.room.message` events among `events`, in the given order.
pub fn message_bodies(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .filter_map(|e| e["content"]["body"].as_str().map(str::to_owned))
        .collect()
}

/// The `next_batch` of a sync response; panics if missing.
#[track_caller]
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_batch in {sync}"))
        .to_owned()
}

/// The user ids typing in `room` according to a sync response's latest
/// `m.typing`, or `None` if it carries none.
pub fn typing_in(sync: &Value, room: &str) -> Option<Vec<String>> {
    sync["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()?
        .iter()
        .rev()
        .find(|e| e["type"] == "m.typing")
        .map(|e| {
            e["content"]["user_ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str().map(str::to_owned))
                .collect()
        })
}
