//! [`SseStream`]: a Server-Sent Events reader over a plain TCP socket, so a
//! test controls exactly what a browser's EventSource would: the request
//! headers (`Accept`, `Last-Event-ID`), when bytes are read (or not: a slow
//! consumer), and how small the socket's receive buffer is. The HTTP/1.1
//! framing (status line, headers, chunks) is read here; the event stream
//! inside it is parsed by `eventsource-stream`.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use eventsource_stream::{EventStream, Eventsource};
use futures::{Stream, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// One SSE event (comments are counted, not returned).
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
    pub retry: Option<u64>,
}

impl SseEvent {
    /// `data` parsed as JSON; panics if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

/// What to send when opening a stream.
#[derive(Clone, Debug, Default)]
pub struct SseRequest {
    /// Path and query, e.g. `/_matrix/client/v3/sync?since=...`.
    pub path: String,
    /// Sent as `Authorization: Bearer`; `None` sends none.
    pub bearer: Option<String>,
    pub last_event_id: Option<String>,
    /// `Accept: text/event-stream` (what EventSource sends).
    pub accept_stream: bool,
    /// Shrinks the socket's receive buffer (bytes), for slow-consumer tests.
    pub recv_buffer: Option<u32>,
}

/// The response body as it arrives, de-chunked, handed to the SSE parser.
type BodyBytes = Pin<Box<dyn Stream<Item = std::io::Result<Vec<u8>>> + Send>>;

pub struct SseStream {
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body until events are first read ([`Self::body_json`] reads it
    /// directly), then the events parsed from it.
    body: Option<Body>,
    events: Option<EventStream<BodyBytes>>,
    seen: Arc<Mutex<Seen>>,
    ended: bool,
}

/// What the body carried besides events: keep-alive comments, which the
/// parser drops, and the whole text, for a response that is not a stream.
#[derive(Default)]
struct Seen {
    text: Vec<u8>,
    comments: usize,
    /// The next byte starts a line (where a `:` starts a comment).
    mid_line: bool,
}

impl Seen {
    fn record(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if !self.mid_line && b == b':' {
                self.comments += 1;
            }
            self.mid_line = b != b'\n';
        }
        self.text.extend_from_slice(bytes);
    }
}

/// The socket after the response head: yields the body's bytes, taken out
/// of their chunks when the response is chunked.
struct Body {
    socket: TcpStream,
    /// Bytes read but not yet handed on (a partial chunk).
    raw: Vec<u8>,
    chunked: bool,
    done: bool,
    seen: Arc<Mutex<Seen>>,
}

impl Body {
    /// The next piece of the body; `None` once it has ended (the last chunk,
    /// or the connection closed).
    async fn next_piece(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        loop {
            if let Some(piece) = self.take_piece() {
                self.seen.lock().unwrap().record(&piece);
                return Some(Ok(piece));
            }
            if self.done {
                return None;
            }
            let mut buf = [0u8; 16 * 1024];
            match self.socket.read(&mut buf).await {
                Ok(0) => self.done = true,
                Ok(n) => self.raw.extend_from_slice(&buf[..n]),
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }

    /// A whole chunk's data (or, unchunked, whatever was read), if there.
    fn take_piece(&mut self) -> Option<Vec<u8>> {
        if !self.chunked {
            return (!self.raw.is_empty()).then(|| std::mem::take(&mut self.raw));
        }
        let line_end = find(&self.raw, b"\r\n")?;
        let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
        if size == 0 {
            self.done = true;
            self.raw.clear();
            return None;
        }
        let start = line_end + 2;
        if self.raw.len() < start + size + 2 {
            return None;
        }
        let piece = self.raw[start..start + size].to_vec();
        self.raw.drain(..start + size + 2);
        Some(piece)
    }
}

impl SseStream {
    /// Connects, sends the request and reads the status line and headers.
    pub async fn open(port: u16, request: SseRequest) -> Self {
        let socket = TcpSocket::new_v4().expect("socket");
        if let Some(size) = request.recv_buffer {
            socket.set_recv_buffer_size(size).expect("SO_RCVBUF");
        }
        let mut socket = socket
            .connect(([127, 0, 0, 1], port).into())
            .await
            .expect("connect");
        let mut head = format!(
            "GET {} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCache-Control: no-cache\r\n",
            request.path
        );
        if request.accept_stream {
            head.push_str("Accept: text/event-stream\r\n");
        }
        if let Some(token) = &request.bearer {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        if let Some(id) = &request.last_event_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        head.push_str("\r\n");
        socket
            .write_all(head.as_bytes())
            .await
            .expect("send request");

        let mut raw = Vec::new();
        let end = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                if let Some(end) = find(&raw, b"\r\n\r\n") {
                    return end;
                }
                let mut buf = [0u8; 16 * 1024];
                let n = socket.read(&mut buf).await.expect("read the response head");
                assert!(n > 0, "connection closed before the response head");
                raw.extend_from_slice(&buf[..n]);
            }
        })
        .await
        .expect("no response head within 30 s");
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        raw.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|line| line.split_once(':'))
            .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
            .collect();
        let chunked = headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
        let seen = Arc::new(Mutex::new(Seen::default()));
        SseStream {
            status,
            headers,
            body: Some(Body {
                socket,
                raw,
                chunked,
                done: false,
                seen: seen.clone(),
            }),
            events: None,
            seen,
            ended: false,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Keep-alive comments seen so far.
    pub fn comments(&self) -> usize {
        self.seen.lock().unwrap().comments
    }

    /// The whole body, for a response that is not a stream (errors).
    pub async fn body_json(&mut self) -> Value {
        let body = self
            .body
            .as_mut()
            .expect("body_json on a stream whose events were read");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = body.seen.lock().unwrap().text.clone();
            if let Ok(value) = serde_json::from_slice::<Value>(&text) {
                return value;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let more = tokio::time::timeout(left, body.next_piece()).await;
            assert!(
                matches!(more, Ok(Some(Ok(_)))),
                "no JSON body: {:?}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    /// The events parsed from the body, set up on first use.
    fn events(&mut self) -> &mut EventStream<BodyBytes> {
        if self.events.is_none() {
            let body = self.body.take().expect("a body");
            let bytes = futures::stream::unfold(body, |mut body| async move {
                let piece = body.next_piece().await?;
                Some((piece, body))
            });
            let bytes: BodyBytes = Box::pin(bytes);
            self.events = Some(bytes.eventsource());
        }
        self.events.as_mut().unwrap()
    }

    /// The next event within `within`, skipping comments; `None` on timeout
    /// or when the server closed the stream.
    pub async fn next_event(&mut self, within: Duration) -> Option<SseEvent> {
        if self.ended {
            return None;
        }
        // Cancel-safe: a piece half read stays in the stream for next time.
        match tokio::time::timeout(within, self.events().next()).await {
            Ok(Some(Ok(event))) => Some(SseEvent {
                event: event.event,
                id: (!event.id.is_empty()).then_some(event.id),
                data: event.data,
                retry: event.retry.map(|r| r.as_millis() as u64),
            }),
            Ok(Some(Err(e))) => panic!("not an event stream: {e}"),
            Ok(None) => {
                self.ended = true;
                None
            }
            Err(_) => None,
        }
    }

    /// The next `sync` event's data, panicking if none comes in time.
    pub async fn next_sync(&mut self, within: Duration) -> (SseEvent, Value) {
        let event = self
            .next_event(within)
            .await
            .unwrap_or_else(|| panic!("no sync event within {within:?}"));
        assert_eq!(event.event, "sync", "event type");
        let data = event.json();
        (event, data)
    }

    /// Whether the server has closed the stream.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Reads whatever arrives for `within` (keep-alive comments included).
    pub async fn idle_for(&mut self, within: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + within;
        let mut events = Vec::new();
        while let Some(event) = self
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            events.push(event);
        }
        events
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
