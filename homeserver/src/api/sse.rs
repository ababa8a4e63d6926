//! Sync as a Server-Sent Events stream: `GET /sync` with `Accept:
//! text/event-stream`, and MSC2108's `/sync/stream`. Tern's extension; the
//! JSON long-poll is unchanged for clients that do not ask for it.
//!
//! Each event is `event: sync`, `id: <next_batch>`, `data: <sync JSON>`.
//! The first is the initial (or `since`) sync; then one per batch of
//! changes. A reconnect's `Last-Event-ID` (which EventSource sends on its
//! own) or `since` resumes after that token, across restarts too: tokens
//! are store positions.
//!
//! Backpressure: the stream is pulled. The next delta is computed only when
//! the previous one has been written to the socket, so a slow client holds
//! at most one response; when it catches up it gets one delta from its
//! last token, `limited` (with `prev_batch`) where rooms moved on by more
//! than the timeline limit. Fan-out to others never waits for it.
//!
//! Delivery (`tern.delivered`) is recorded only on proof that the client
//! holds events: the token of a reconnect, `POST
//! /_matrix/client/unstable/tern/sync/ack`, or an explicit receipt. Writing
//! to the socket is not proof.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use super::error::{ApiError, ApiResult};
use super::extract::{Auth, MatrixJson, MatrixQuery};
use super::sync::{sync_request, SyncQuery};
use super::EmptyResponse;
use crate::service::error::ErrorKind;
use crate::service::presence::SyncGuard;
use crate::service::rooms::Requester;
use crate::service::sync::{SyncRequest, SyncResponse};
use crate::service::token::SyncToken;
use crate::service::Services;

/// How long one internal wait for news lasts before it is renewed; the
/// stream itself stays open.
const STEP: Duration = Duration::from_secs(30);
/// What EventSource waits before reconnecting (its default is 3 s).
const RETRY: Duration = Duration::from_millis(1000);

/// Whether the request asks for an event stream.
pub fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// The token a reconnecting EventSource carries.
fn last_event_id(headers: &HeaderMap) -> ApiResult<Option<SyncToken>> {
    match headers.get("last-event-id").map(HeaderValue::to_str) {
        None => Ok(None),
        Some(Ok(id)) if id.trim().is_empty() => Ok(None),
        Some(Ok(id)) => Ok(Some(id.trim().parse()?)),
        Some(Err(_)) => Err(ApiError::new(
            ErrorKind::InvalidParam,
            "Last-Event-ID is not a sync token",
        )),
    }
}

/// # `GET /_matrix/client/unstable/org.matrix.msc2108/sync/stream`
/// Always a stream, whatever the `Accept` header says.
pub async fn sync_stream(
    State(services): State<Arc<Services>>,
    auth: Auth,
    headers: HeaderMap,
    MatrixQuery(query): MatrixQuery<SyncQuery>,
) -> ApiResult<Response> {
    let request = sync_request(&services, &auth, query).await?;
    stream(services, auth.who, request, &headers).await
}

/// One stream's state between events.
struct Session {
    services: Arc<Services>,
    who: Requester,
    request: SyncRequest,
    /// Sent first: computed before the response starts, so errors in it
    /// are plain Matrix errors rather than a broken stream.
    first: Option<SyncResponse>,
    /// The user counts as connected (presence) while the stream is open.
    _connected: SyncGuard,
}

/// Answers with the stream. `Last-Event-ID` wins over `since`: a browser
/// reconnects to the same URL, whose `since` is older.
pub async fn stream(
    services: Arc<Services>,
    who: Requester,
    mut request: SyncRequest,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    if let Some(token) = last_event_id(headers)? {
        request.since = Some(token);
    }
    let connected = services.sync.connect(&who, request.set_presence).await?;
    // The first answer comes at once, even when empty: the client learns
    // its token.
    request.timeout = Duration::ZERO;
    request.acknowledge = true;
    let first = services.sync.sync_connected(&who, &request).await?;
    // Later steps wait for news; their `since` is what we sent, which is
    // no proof of delivery.
    request.timeout = STEP;
    request.acknowledge = false;
    let keep_alive = services.config.sync.sse_keep_alive;
    let session = Session {
        services,
        who,
        request,
        first: Some(first),
        _connected: connected,
    };
    let events = futures::stream::unfold(session, next_event);
    let mut response = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(keep_alive).text("keep-alive"))
        .into_response();
    // Proxies (nginx) must not buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The next event: waits until the user's sync has news. Ends the stream
/// on shutdown or on a store error; the client reconnects with its last
/// token and loses nothing.
async fn next_event(
    mut session: Session,
) -> Option<(Result<Event, std::convert::Infallible>, Session)> {
    if let Some(first) = session.first.take() {
        let event = to_event(&mut session, &first)?.retry(RETRY);
        return Some((Ok(event), session));
    }
    loop {
        let response = match session
            .services
            .sync
            .sync_connected(&session.who, &session.request)
            .await
        {
            Ok(response) => response,
            Err(err) => {
                tracing::warn!(error = %err.message, "sync stream step failed; closing it");
                return None;
            }
        };
        if session.services.sync.shutting_down() {
            return None;
        }
        let since = session.request.since.map(|s| s.to_string());
        if Some(response.next_batch.as_str()) != since.as_deref() {
            let event = to_event(&mut session, &response)?;
            return Some((Ok(event), session));
        }
    }
}

/// Frames a sync response and moves the session's token past it.
fn to_event(session: &mut Session, response: &SyncResponse) -> Option<Event> {
    let next = &response.next_batch;
    session.request.since = Some(next.parse().ok()?);
    let event = Event::default().event("sync").id(next);
    event.json_data(response).ok()
}

#[derive(Debug, Deserialize)]
pub struct AckBody {
    pub next_batch: String,
}

/// # `POST /_matrix/client/unstable/tern/sync/ack`
/// An SSE client's proof that it holds everything up to `next_batch` (the
/// `id` of the last event it processed): records `tern.delivered` as a
/// long-poll with that `since` would, and releases the to-device messages
/// up to it.
pub async fn ack(
    State(services): State<Arc<Services>>,
    auth: Auth,
    MatrixJson(body): MatrixJson<AckBody>,
) -> ApiResult<Json<EmptyResponse>> {
    let token: SyncToken = body.next_batch.parse()?;
    services.sync.acknowledge(&auth.who, token).await?;
    Ok(Json(EmptyResponse {}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers_are_read() {
        let mut headers = HeaderMap::new();
        assert!(!wants_stream(&headers));
        headers.insert(
            "accept",
            HeaderValue::from_static("text/event-stream, */*;q=0.1"),
        );
        assert!(wants_stream(&headers));
        headers.insert("accept", HeaderValue::from_static("application/json"));
        assert!(!wants_stream(&headers));
    }

    #[test]
    fn last_event_id_must_be_a_token() {
        let mut headers = HeaderMap::new();
        assert!(last_event_id(&headers).unwrap().is_none());
        headers.insert("last-event-id", HeaderValue::from_static("garbage"));
        assert!(last_event_id(&headers).is_err());
        let token = SyncToken {
            events: 5,
            account_data: 1,
            typing: 0,
            receipts: 2,
            presence: 3,
            device_lists: 4,
            to_device: 6,
        };
        headers.insert(
            "last-event-id",
            HeaderValue::from_str(&token.to_string()).unwrap(),
        );
        assert_eq!(last_event_id(&headers).unwrap(), Some(token));
    }
}
