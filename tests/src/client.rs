//! [`Client`]: one device of one user, speaking the Client-Server API.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::server::http_client;
use crate::{assert_ok, enc, next_batch, text, TestServer, PASSWORD, V3};

/// One device of one user talking to one server (or an anonymous caller).
///
/// Cheap to clone: clones share the connection settings and the access token.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base_url: String,
    pub access_token: Option<String>,
    /// Empty for an anonymous client.
    pub user_id: String,
    /// Empty for an anonymous client.
    pub device_id: String,
}

impl Client {
    /// A client without an access token, for registration, login and error tests.
    pub fn anonymous(server: &TestServer) -> Self {
        Self::anonymous_at(&server.base_url())
    }

    /// [`Self::anonymous`] for any server's client API (Synapse's too).
    pub fn anonymous_at(base_url: &str) -> Self {
        Client {
            // Long enough for a 30 s long-poll sync plus slack.
            http: http_client(Duration::from_secs(60)),
            base_url: base_url.to_owned(),
            access_token: None,
            user_id: String::new(),
            device_id: String::new(),
        }
    }

    /// The same device talking to another server (another node of a cluster).
    pub fn on(&self, server: &TestServer) -> Self {
        self.on_url(&server.base_url())
    }

    /// [`Self::on`] by address, for a server that may be gone by then.
    pub fn on_url(&self, base_url: &str) -> Self {
        Client {
            base_url: base_url.to_owned(),
            ..self.clone()
        }
    }

    /// The same device with another (or no) access token.
    pub fn with_token(&self, token: Option<&str>) -> Self {
        Client {
            access_token: token.map(str::to_owned),
            ..self.clone()
        }
    }

    /// Registers `name` with [`PASSWORD`] through the dummy auth stage and
    /// returns its first device. Panics unless registration succeeds.
    pub async fn register(server: &TestServer, name: &str) -> Self {
        Self::register_at(&server.base_url(), name).await
    }

    /// [`Self::register`] on any server's client API (Synapse's too).
    pub async fn register_at(base_url: &str, name: &str) -> Self {
        let anon = Client::anonymous_at(base_url);
        let mut body = json!({
            "username": name,
            "password": PASSWORD,
            "auth": {"type": "m.login.dummy"},
        });
        let (mut status, mut resp) = anon.post(&format!("{V3}/register"), &body).await;
        if status == 401 {
            // Some servers want the UIA session even for the dummy stage.
            if let Some(session) = resp["session"].as_str() {
                body["auth"]["session"] = json!(session);
                (status, resp) = anon.post(&format!("{V3}/register"), &body).await;
            }
        }
        assert_eq!(status, 200, "register {name}: {resp}");
        anon.logged_in(&resp)
    }

    /// Logs in a new device of `user` (localpart or full user id) with a password.
    /// Panics unless login succeeds.
    pub async fn login(server: &TestServer, user: &str, password: &str) -> Self {
        Self::login_at(&server.base_url(), user, password).await
    }

    /// [`Self::login`] on a server given by URL (Synapse's client API).
    pub async fn login_at(base_url: &str, user: &str, password: &str) -> Self {
        let anon = Client::anonymous_at(base_url);
        let resp = anon
            .post(
                &format!("{V3}/login"),
                &json!({
                    "type": "m.login.password",
                    "identifier": {"type": "m.id.user", "user": user},
                    "password": password,
                }),
            )
            .await;
        let body = assert_ok(resp);
        anon.logged_in(&body)
    }

    fn logged_in(&self, resp: &Value) -> Self {
        let field = |name: &str| -> String {
            resp[name]
                .as_str()
                .unwrap_or_else(|| panic!("no `{name}` in {resp}"))
                .to_owned()
        };
        Client {
            access_token: Some(field("access_token")),
            user_id: field("user_id"),
            device_id: field("device_id"),
            ..self.clone()
        }
    }

    /// Sends a request; a network error (server down) is returned, not a panic.
    /// A body that is not JSON comes back as `Value::String`, an empty one as `Null`.
    pub async fn try_request(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = &self.access_token {
            req = req.bearer_auth(token);
        }
        if let Some(content_type) = content_type {
            req = req.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        if let Some(body) = body {
            req = req.body(body);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await?;
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Ok((status, value))
    }

    /// A GET whose answer is bytes (media): status, Content-Type and body.
    pub async fn get_bytes(&self, path: &str) -> (u16, String, Vec<u8>) {
        let mut req = self.http.get(format!("{}{path}", self.base_url));
        if let Some(token) = &self.access_token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let body = resp.bytes().await.expect("read body").to_vec();
        (status, content_type, body)
    }

    /// Uploads media and returns its `mxc://` URI.
    pub async fn upload(&self, bytes: &[u8], content_type: &str, filename: &str) -> String {
        let path = format!("/_matrix/media/v3/upload?filename={}", crate::enc(filename));
        let (status, body) = self
            .request_raw(Method::POST, &path, bytes.to_vec(), Some(content_type))
            .await;
        assert_eq!(status, 200, "upload: {body}");
        body["content_uri"]
            .as_str()
            .expect("content_uri")
            .to_owned()
    }

    /// Sends raw bytes with an optional Content-Type; panics on a network error.
    pub async fn request_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        content_type: Option<&str>,
    ) -> (u16, Value) {
        self.try_request(method.clone(), path, Some(body), content_type)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// Sends JSON (or nothing); panics on a network error.
    pub async fn request(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body.map(|b| serde_json::to_vec(b).expect("serialize body"));
        let content_type = body.map(|_| "application/json");
        self.try_request(method.clone(), path, bytes, content_type)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.request(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        self.request(Method::PUT, path, Some(body)).await
    }

    /// `POST /createRoom`; returns the room id, panics on failure.
    pub async fn create_room(&self, body: &Value) -> String {
        let resp = assert_ok(self.post(&format!("{V3}/createRoom"), body).await);
        resp["room_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no room_id in {resp}"))
            .to_owned()
    }

    /// `PUT /rooms/{room}/send/m.room.message/{txn}` with `content`.
    /// Returns the raw outcome, including network errors, for crash tests.
    pub async fn try_send(
        &self,
        room: &str,
        txn: &str,
        content: &Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.try_request(
            Method::PUT,
            &format!("{V3}/rooms/{}/send/m.room.message/{}", enc(room), enc(txn)),
            Some(serde_json::to_vec(content).expect("serialize")),
            Some("application/json"),
        )
        .await
    }

    /// Sends an `m.room.message` with `content`; returns its event id,
    /// panics on failure.
    pub async fn send(&self, room: &str, txn: &str, content: &Value) -> String {
        let (status, resp) = self
            .try_send(room, txn, content)
            .await
            .unwrap_or_else(|e| panic!("send {txn}: {e}"));
        assert_eq!(status, 200, "send {txn}: {resp}");
        resp["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_id in {resp}"))
            .to_owned()
    }

    /// [`Self::try_send`] with a text message.
    pub async fn try_send_text(
        &self,
        room: &str,
        txn: &str,
        body: &str,
    ) -> Result<(u16, Value), reqwest::Error> {
        self.try_send(room, txn, &text(body)).await
    }

    /// [`Self::send`] with a text message.
    pub async fn send_text(&self, room: &str, txn: &str, body: &str) -> String {
        self.send(room, txn, &text(body)).await
    }

    /// `GET /sync`; panics unless 200. `filter` is inline filter JSON or a filter id.
    pub async fn sync(&self, since: Option<&str>, timeout_ms: u64, filter: Option<&str>) -> Value {
        let mut path = format!("{V3}/sync?timeout={timeout_ms}");
        if let Some(since) = since {
            path.push_str(&format!("&since={}", enc(since)));
        }
        if let Some(filter) = filter {
            path.push_str(&format!("&filter={}", enc(filter)));
        }
        assert_ok(self.get(&path).await)
    }

    /// Long-polls `/sync` from `since` until `done` accepts a response; returns
    /// that response. Panics if nothing acceptable arrives within `within`.
    pub async fn sync_until(
        &self,
        since: &str,
        within: Duration,
        filter: Option<&str>,
        mut done: impl FnMut(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        let mut since = since.to_owned();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "sync: nothing matched within {within:?}");
            let resp = self
                .sync(Some(&since), left.as_millis() as u64, filter)
                .await;
            if done(&resp) {
                return resp;
            }
            since = next_batch(&resp);
        }
    }

    /// `GET /rooms/{room}/messages`; panics unless 200.
    pub async fn messages(&self, room: &str, dir: &str, from: Option<&str>, limit: u32) -> Value {
        let mut path = format!("{V3}/rooms/{}/messages?dir={dir}&limit={limit}", enc(room));
        if let Some(from) = from {
            path.push_str(&format!("&from={}", enc(from)));
        }
        assert_ok(self.get(&path).await)
    }

    /// The whole visible history of `room`, oldest first: pages `/messages`
    /// backwards from the current sync position until `end` is absent.
    pub async fn room_history(&self, room: &str) -> Vec<Value> {
        let now = self
            .sync(None, 0, Some(r#"{"room":{"timeline":{"limit":1}}}"#))
            .await;
        let mut from = next_batch(&now);
        let mut events = Vec::new();
        for _ in 0..1000 {
            let page = self.messages(room, "b", Some(&from), 100).await;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            let chunk_len = chunk.len();
            events.extend(chunk);
            match page["end"].as_str() {
                Some(end) if chunk_len > 0 => from = end.to_owned(),
                _ => {
                    events.reverse();
                    return events;
                }
            }
        }
        panic!("history of {room} did not end after 1000 pages");
    }

    /// `GET /pushers`: this user's pushers; panics unless 200.
    pub async fn pushers(&self) -> Vec<Value> {
        let body = assert_ok(self.get(&format!("{V3}/pushers")).await);
        body["pushers"].as_array().cloned().unwrap_or_default()
    }

    /// `POST /join/{roomIdOrAlias}`.
    pub async fn join(&self, room_or_alias: &str) -> (u16, Value) {
        self.post(&format!("{V3}/join/{}", enc(room_or_alias)), &json!({}))
            .await
    }

    /// `POST /rooms/{room}/invite`.
    pub async fn invite(&self, room: &str, user_id: &str) -> (u16, Value) {
        self.post(
            &format!("{V3}/rooms/{}/invite", enc(room)),
            &json!({"user_id": user_id}),
        )
        .await
    }

    /// `POST /rooms/{room}/leave`.
    pub async fn leave(&self, room: &str) -> (u16, Value) {
        self.post(&format!("{V3}/rooms/{}/leave", enc(room)), &json!({}))
            .await
    }
}
