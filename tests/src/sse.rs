//! [`SseStream`]: a Server-Sent Events reader over a plain TCP socket, so a
//! test controls exactly what a browser's EventSource would: the request
//! headers (`Accept`, `Last-Event-ID`), when bytes are read (or not: a slow
//! consumer), and how small the socket's receive buffer is.

use std::time::{Duration, Instant};

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

pub struct SseStream {
    socket: TcpStream,
    pub status: u16,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Raw bytes read but not yet de-chunked.
    raw: Vec<u8>,
    /// De-chunked body text not yet parsed into events.
    text: String,
    chunked: bool,
    /// The status line and headers have been read; body bytes follow.
    in_body: bool,
    /// Keep-alive comments seen so far.
    pub comments: usize,
    ended: bool,
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
        let mut stream = SseStream {
            socket,
            status: 0,
            headers: Vec::new(),
            raw: Vec::new(),
            text: String::new(),
            chunked: false,
            in_body: false,
            comments: 0,
            ended: false,
        };
        stream.read_head().await;
        stream
    }

    async fn read_head(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let end = loop {
            if let Some(pos) = find(&self.raw, b"\r\n\r\n") {
                break pos;
            }
            assert!(
                self.fill(deadline).await,
                "connection closed before the response head"
            );
        };
        let head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
        self.raw.drain(..end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        self.status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                self.headers
                    .push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
            }
        }
        self.chunked = self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
        self.in_body = true;
        self.dechunk();
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads more bytes; false on EOF or when the deadline passes.
    async fn fill(&mut self, deadline: Instant) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, self.socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                self.ended = true;
                false
            }
            Ok(Ok(n)) => {
                self.raw.extend_from_slice(&buf[..n]);
                if self.in_body {
                    self.dechunk();
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Moves complete chunks (or everything, without chunking) to `text`.
    fn dechunk(&mut self) {
        if !self.chunked {
            self.text.push_str(&String::from_utf8_lossy(&self.raw));
            self.raw.clear();
            return;
        }
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return;
            };
            let size_text = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size {size_text:?}"));
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            let start = line_end + 2;
            if self.raw.len() < start + size + 2 {
                return;
            }
            self.text
                .push_str(&String::from_utf8_lossy(&self.raw[start..start + size]));
            self.raw.drain(..start + size + 2);
        }
    }

    /// The whole body, for a response that is not a stream (errors).
    pub async fn body_json(&mut self) -> Value {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(value) = serde_json::from_str::<Value>(&self.text) {
                return value;
            }
            assert!(
                self.fill(deadline).await || serde_json::from_str::<Value>(&self.text).is_ok(),
                "no JSON body: {:?}",
                self.text
            );
        }
    }

    /// The next event within `within`, skipping comments; `None` on timeout
    /// or when the server closed the stream.
    pub async fn next_event(&mut self, within: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            if self.ended || !self.fill(deadline).await {
                return None;
            }
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
        loop {
            while let Some(event) = self.parse_one() {
                events.push(event);
            }
            if self.ended || !self.fill(deadline).await {
                return events;
            }
        }
    }

    /// One event from `text`, if a whole one (ending in a blank line) is there.
    fn parse_one(&mut self) -> Option<SseEvent> {
        loop {
            let end = self.text.find("\n\n")?;
            let block: String = self.text[..end].to_owned();
            self.text.drain(..end + 2);
            let mut event = SseEvent {
                event: "message".to_owned(),
                id: None,
                data: String::new(),
                retry: None,
            };
            let mut has_field = false;
            for line in block.lines() {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                has_field = true;
                match field {
                    "event" => event.event = value.to_owned(),
                    "id" => event.id = Some(value.to_owned()),
                    "retry" => event.retry = value.parse().ok(),
                    "data" => {
                        if !event.data.is_empty() {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                    }
                    _ => {}
                }
            }
            if has_field {
                return Some(event);
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
