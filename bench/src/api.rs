//! The few Matrix Client-Server API calls the benchmark makes, over plain HTTP.
//!
//! Only public, spec'd endpoints are used, so the tool can drive any Matrix
//! homeserver, not just Tern.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::{json, Value};

const V3: &str = "/_matrix/client/v3";

/// Long enough for a 30 s long-poll sync plus a loaded server's slack; a send
/// that takes longer than this is reported as an error rather than hanging.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Microseconds since the Unix epoch. Wall-clock time (not `Instant`) because
/// it is embedded in messages and compared with arrival times: both ends run
/// on this machine, so they share a clock.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock before 1970")
        .as_micros() as u64
}

/// Everything but RFC 3986's unreserved characters is escaped in a segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes one path segment (room ids contain `!` and `:`).
fn encode_segment(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// One shared HTTP client plus the servers' base URLs. Cloning is cheap: the
/// connection pool inside `reqwest::Client` is shared.
///
/// Several URLs (comma-separated) are nodes of one deployment, or separate
/// federating servers: registrations take them in turn, and each user's
/// requests then stick to the one it registered on (a load balancer with
/// session affinity does the same; a federated user exists only on its own
/// server). A token registered elsewhere picks a node by its hash.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    bases: std::sync::Arc<Vec<String>>,
    turn: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// The node each registered user's token belongs to.
    homes: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Each registered token's server name (from its user id), and each
    /// room created here with the server of its creator: where to join it
    /// through (a room id need not name a server).
    servers: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, String>>>,
}

impl Api {
    /// `max_connections` should cover every request that can be in flight at
    /// once (one sync per user plus every sender), so that no request waits
    /// for, or has to reopen, a connection.
    pub fn new(base: &str, max_connections: usize) -> anyhow::Result<Self> {
        Self::with_timeout(base, max_connections, REQUEST_TIMEOUT)
    }

    /// Like `new`, with a different per-request timeout: idle long-polls are
    /// held open longer than `REQUEST_TIMEOUT`.
    pub fn with_timeout(
        base: &str,
        max_connections: usize,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(max_connections)
            .tcp_nodelay(true)
            .timeout(timeout)
            .build()?;
        let bases: Vec<String> = base
            .split(',')
            .map(|b| b.trim().trim_end_matches('/').to_string())
            .filter(|b| !b.is_empty())
            .collect();
        if bases.is_empty() {
            bail!("--url names no server");
        }
        Ok(Self {
            http,
            bases: std::sync::Arc::new(bases),
            turn: Default::default(),
            homes: Default::default(),
            servers: Default::default(),
        })
    }

    /// The node a request goes to: the token's, or the next in turn.
    fn node(&self, token: Option<&str>) -> usize {
        let n = self.bases.len();
        match token {
            _ if n == 1 => 0,
            Some(token) => {
                if let Some(home) = self.homes.lock().expect("homes").get(token) {
                    return *home;
                }
                use std::hash::{Hash, Hasher};
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                token.hash(&mut hasher);
                hasher.finish() as usize % n
            }
            None => self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % n,
        }
    }

    /// Sends a request and returns the JSON body, or an error naming the
    /// endpoint, the status and the server's error body.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.call_on(self.node(token), method, path, token, body)
            .await
    }

    /// [`Self::call`] to node `node`.
    async fn call_on(
        &self,
        node: usize,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method.clone(), format!("{}{path}", self.bases[node]));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .with_context(|| format!("{method} {path}"))?;
        if !status.is_success() {
            bail!("{method} {path}: HTTP {status}: {}", truncate(&text, 300));
        }
        serde_json::from_str(&text).with_context(|| format!("{method} {path}: invalid JSON"))
    }

    /// Registers `username` with the dummy auth flow; returns (user_id, access_token).
    pub async fn register(
        &self,
        username: &str,
        password: &str,
    ) -> anyhow::Result<(String, String)> {
        let body = json!({
            "username": username,
            "password": password,
            "auth": {"type": "m.login.dummy"},
        });
        let node = self.node(None);
        let v = self
            .call_on(
                node,
                reqwest::Method::POST,
                &format!("{V3}/register"),
                None,
                Some(&body),
            )
            .await?;
        let token = str_field(&v, "access_token")?;
        self.homes
            .lock()
            .expect("homes")
            .insert(token.clone(), node);
        let user_id = str_field(&v, "user_id")?;
        if let Some((_, server)) = user_id.split_once(':') {
            self.servers
                .lock()
                .expect("servers")
                .insert(token.clone(), server.to_owned());
        }
        Ok((user_id, token))
    }

    /// Creates a public room (so members can join without an invite).
    pub async fn create_room(&self, token: &str) -> anyhow::Result<String> {
        self.create_room_with(token, &json!({"preset": "public_chat"}))
            .await
    }

    /// Creates a room from a `/createRoom` body of the caller's.
    pub async fn create_room_with(&self, token: &str, body: &Value) -> anyhow::Result<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("{V3}/createRoom"),
                Some(token),
                Some(body),
            )
            .await?;
        let room_id = str_field(&v, "room_id")?;
        let mut servers = self.servers.lock().expect("servers");
        if let Some(server) = servers.get(token).cloned() {
            servers.insert(room_id.clone(), server);
        }
        Ok(room_id)
    }

    /// Joins `room_id` through its creator's server (or the one its id
    /// names): needed when the room is on another server, which Synapse
    /// will not guess.
    pub async fn join(&self, token: &str, room_id: &str) -> anyhow::Result<()> {
        let creator = self.servers.lock().expect("servers").get(room_id).cloned();
        let server = creator.or_else(|| room_id.split_once(':').map(|(_, s)| s.to_owned()));
        match server {
            Some(server) => self.join_via(token, room_id, &server).await,
            None => {
                let path = format!("{V3}/join/{}", encode_segment(room_id));
                self.call(reqwest::Method::POST, &path, Some(token), Some(&json!({})))
                    .await?;
                Ok(())
            }
        }
    }

    /// Joins `room_id` through `server` (`?server_name=`): a room of
    /// another server.
    pub async fn join_via(&self, token: &str, room_id: &str, server: &str) -> anyhow::Result<()> {
        let path = format!(
            "{V3}/join/{}?server_name={}",
            encode_segment(room_id),
            encode_segment(server)
        );
        self.call(reqwest::Method::POST, &path, Some(token), Some(&json!({})))
            .await?;
        Ok(())
    }

    /// Sends an `m.room.message`; returns the event id once the server acknowledged it.
    pub async fn send_message(
        &self,
        token: &str,
        room_id: &str,
        txn_id: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        self.send_event(token, room_id, "m.room.message", txn_id, content)
            .await
    }

    /// Sends a message event of `event_type`; returns its event id.
    pub async fn send_event(
        &self,
        token: &str,
        room_id: &str,
        event_type: &str,
        txn_id: &str,
        content: &Value,
    ) -> anyhow::Result<String> {
        let path = format!(
            "{V3}/rooms/{}/send/{}/{}",
            encode_segment(room_id),
            encode_segment(event_type),
            encode_segment(txn_id)
        );
        let v = self
            .call(reqwest::Method::PUT, &path, Some(token), Some(content))
            .await?;
        str_field(&v, "event_id")
    }

    /// The device id of the token's session (registration made one).
    pub async fn whoami_device(&self, token: &str) -> anyhow::Result<String> {
        let path = format!("{V3}/account/whoami");
        let v = self
            .call(reqwest::Method::GET, &path, Some(token), None)
            .await?;
        str_field(&v, "device_id")
    }

    /// `POST /keys/<what>` (`upload`, `query`, `claim`); returns the answer.
    pub async fn keys(&self, token: &str, what: &str, body: &Value) -> anyhow::Result<Value> {
        let path = format!("{V3}/keys/{what}");
        self.call(reqwest::Method::POST, &path, Some(token), Some(body))
            .await
    }

    /// `PUT /sendToDevice/{event_type}/{txn_id}` with `{"messages": ...}`.
    pub async fn send_to_device(
        &self,
        token: &str,
        event_type: &str,
        txn_id: &str,
        body: &Value,
    ) -> anyhow::Result<()> {
        let path = format!(
            "{V3}/sendToDevice/{}/{}",
            encode_segment(event_type),
            encode_segment(txn_id)
        );
        self.call(reqwest::Method::PUT, &path, Some(token), Some(body))
            .await?;
        Ok(())
    }

    /// Sets the user's typing notification in a room (`m.typing` EDU).
    pub async fn typing(
        &self,
        token: &str,
        room_id: &str,
        user_id: &str,
        typing: bool,
        timeout_ms: u64,
    ) -> anyhow::Result<()> {
        let path = format!(
            "{V3}/rooms/{}/typing/{}",
            encode_segment(room_id),
            encode_segment(user_id)
        );
        let body = json!({"typing": typing, "timeout": timeout_ms});
        self.call(reqwest::Method::PUT, &path, Some(token), Some(&body))
            .await?;
        Ok(())
    }

    /// Posts an `m.read` receipt for `event_id`.
    pub async fn read_receipt(
        &self,
        token: &str,
        room_id: &str,
        event_id: &str,
    ) -> anyhow::Result<()> {
        let path = format!(
            "{V3}/rooms/{}/receipt/m.read/{}",
            encode_segment(room_id),
            encode_segment(event_id)
        );
        self.call(reqwest::Method::POST, &path, Some(token), Some(&json!({})))
            .await?;
        Ok(())
    }

    /// One `/sync` call. Returns the response and the wall-clock time at which
    /// its body had fully arrived, which is when a client could first show the
    /// messages in it.
    pub async fn sync(
        &self,
        token: &str,
        since: Option<&str>,
        timeout_ms: u64,
        filter: Option<&str>,
    ) -> anyhow::Result<(Value, u64)> {
        let mut query: Vec<(&str, String)> = vec![("timeout", timeout_ms.to_string())];
        if let Some(filter) = filter {
            query.push(("filter", filter.to_string()));
        }
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        let resp = self
            .http
            .get(format!("{}{V3}/sync", self.bases[self.node(Some(token))]))
            .bearer_auth(token)
            .query(&query)
            .send()
            .await
            .context("GET /sync")?;
        let status = resp.status();
        let bytes = resp.bytes().await.context("GET /sync body")?;
        let arrived = now_micros();
        if !status.is_success() {
            bail!(
                "GET /sync: HTTP {status}: {}",
                truncate(&String::from_utf8_lossy(&bytes), 300)
            );
        }
        let v = serde_json::from_slice(&bytes).context("GET /sync: invalid JSON")?;
        Ok((v, arrived))
    }
}

/// An open SSE sync stream (`Accept: text/event-stream`).
pub struct SyncStream {
    resp: reqwest::Response,
    buf: String,
}

impl Api {
    /// Opens the SSE sync stream from `since`.
    pub async fn sync_stream(
        &self,
        token: &str,
        since: Option<&str>,
        filter: Option<&str>,
    ) -> anyhow::Result<SyncStream> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(filter) = filter {
            query.push(("filter", filter.to_string()));
        }
        if let Some(since) = since {
            query.push(("since", since.to_string()));
        }
        let resp = self
            .http
            .get(format!("{}{V3}/sync", self.bases[self.node(Some(token))]))
            .bearer_auth(token)
            .header("accept", "text/event-stream")
            .query(&query)
            .send()
            .await
            .context("GET /sync (SSE)")?;
        if !resp.status().is_success() {
            bail!("GET /sync (SSE): HTTP {}", resp.status());
        }
        Ok(SyncStream {
            resp,
            buf: String::new(),
        })
    }
}

impl SyncStream {
    /// The next `sync` event's data and when it arrived (comments skipped);
    /// `None` when the server closed the stream.
    pub async fn next(&mut self) -> anyhow::Result<Option<(Value, u64)>> {
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let data: Vec<&str> = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .collect();
                if !data.is_empty() {
                    let v = serde_json::from_str(&data.join("\n"))
                        .context("SSE sync data: invalid JSON")?;
                    return Ok(Some((v, now_micros())));
                }
            }
            match self.resp.chunk().await.context("SSE sync body")? {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return Ok(None),
            }
        }
    }
}

fn str_field(v: &Value, key: &str) -> anyhow::Result<String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .with_context(|| {
            format!(
                "response has no string `{key}`: {}",
                truncate(&v.to_string(), 300)
            )
        })
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_room_ids() {
        assert_eq!(encode_segment("!abc:localhost"), "%21abc%3Alocalhost");
        assert_eq!(encode_segment("tb-1.2_x~"), "tb-1.2_x~");
    }
}
