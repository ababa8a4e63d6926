//! # Black-box test harness for Tern
//!
//! The tests in `tests/tests/` start the real `homeserver` binary on a free
//! loopback port with its own temporary data directory, and talk to it only
//! over HTTP, the way a Matrix client would. Nothing here links against the
//! server crate, so what passes here is what a client gets.
//!
//! # Layout
//! - [`TestServer`] owns one server process: start, graceful stop (SIGTERM),
//!   crash (SIGKILL) and restart on the same data directory and port.
//! - [`Client`] is one device of one user (or an anonymous caller), with a few
//!   helpers for the Client-Server API calls the tests use and generic
//!   `get`/`post`/`put` that return `(status, json)` for everything else.
//!
//! The binary is not built by `cargo test -p tern-tests`: run
//! `cargo build --release -p homeserver` first, or point `TERN_BIN` at one.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tempfile::TempDir;

/// Prefix of every Client-Server API v3 path.
pub const V3: &str = "/_matrix/client/v3";

/// Password given to every account that [`Client::register`] creates.
pub const PASSWORD: &str = "correct horse battery staple";

/// How long a freshly spawned server gets to answer `/versions`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server gets to exit after SIGTERM before we call it hung.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Flags that differ between tests; everything else is fixed by the harness.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Pass `--allow-registration`. Off only to test that registration is refused.
    pub allow_registration: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            allow_registration: true,
        }
    }
}

/// One `homeserver` process on `127.0.0.1:<port>` with its data directory.
///
/// The port and the data directory stay the same across [`TestServer::restart`],
/// so clients, access tokens and sync tokens from before a restart can be reused.
/// Dropping it kills the process, so a failing test never leaks a server.
pub struct TestServer {
    child: Option<Child>,
    port: u16,
    data_dir: PathBuf,
    /// Keeps the temporary data directory alive (and deletes it at the end).
    _data_tmp: Option<TempDir>,
    /// stdout and stderr of every run, appended; shown when a test fails.
    log_path: PathBuf,
    _log_tmp: TempDir,
    options: ServerOptions,
    runs: u32,
}

impl TestServer {
    /// Starts a server with registration allowed on a fresh temporary data directory.
    pub async fn start() -> Self {
        Self::start_with(ServerOptions::default()).await
    }

    /// Starts a server on an existing data directory, e.g. one a previous server left.
    pub async fn start_with_dir(dir: &Path) -> Self {
        Self::launch(dir.to_path_buf(), None, ServerOptions::default()).await
    }

    /// Starts a server with the given options on a fresh temporary data directory.
    pub async fn start_with(options: ServerOptions) -> Self {
        let tmp = tempfile::Builder::new()
            .prefix("tern-data-")
            .tempdir()
            .expect("create data dir");
        let dir = tmp.path().to_path_buf();
        Self::launch(dir, Some(tmp), options).await
    }

    async fn launch(data_dir: PathBuf, data_tmp: Option<TempDir>, options: ServerOptions) -> Self {
        let log_tmp = tempfile::Builder::new()
            .prefix("tern-log-")
            .tempdir()
            .expect("create log dir");
        let mut server = TestServer {
            child: None,
            port: free_port(),
            data_dir,
            _data_tmp: data_tmp,
            log_path: log_tmp.path().join("server.log"),
            _log_tmp: log_tmp,
            options,
            runs: 0,
        };
        server.spawn();
        server.wait_ready().await;
        server
    }

    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Process id of the running server, if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "a server is already running");
        let bin = server_binary();
        assert!(
            bin.exists(),
            "server binary {} not found: run `cargo build --release -p homeserver` \
             (with the same CARGO_TARGET_DIR) or set TERN_BIN",
            bin.display()
        );
        self.runs += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .expect("open server log");
        writeln!(log, "===== run {} of {} =====", self.runs, bin.display()).ok();
        let stderr = log.try_clone().expect("clone log handle");

        let mut cmd = Command::new(&bin);
        cmd.arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--server-name")
            .arg("localhost")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--disable-rate-limits");
        if self.options.allow_registration {
            cmd.arg("--allow-registration");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr));
        kill_with_parent(&mut cmd);
        self.child = Some(cmd.spawn().expect("spawn homeserver"));
    }

    /// Polls `GET /_matrix/client/versions` until it answers 200; panics with the
    /// server log if the process exits first or the deadline passes.
    async fn wait_ready(&mut self) {
        let http = http_client(Duration::from_secs(2));
        let url = format!("{}/_matrix/client/versions", self.base_url());
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "server exited during start-up with {status}; log:\n{}",
                    self.log_tail(8000)
                );
            }
            if let Ok(resp) = http.get(&url).send().await {
                if resp.status().as_u16() == 200 {
                    return;
                }
            }
            if Instant::now() > deadline {
                self.kill_hard();
                panic!(
                    "server did not answer {url} within {STARTUP_TIMEOUT:?}; log:\n{}",
                    self.log_tail(8000)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Crashes the server with SIGKILL and reaps it: no shutdown code runs, just
    /// like a power cut for everything the server had not yet handed to the OS.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill sends SIGKILL on Unix.
            child.kill().ok();
            child.wait().ok();
        }
    }

    /// Asks the server to shut down with SIGTERM and waits for it to exit.
    /// Panics (after a SIGKILL) if it is still running after the shutdown timeout.
    pub async fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("server is not running");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on the pid of a child we have not reaped yet, so the
        // pid cannot have been reused by another process.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().expect("wait for server") {
                return status;
            }
            if Instant::now() > deadline {
                child.kill().ok();
                child.wait().ok();
                panic!(
                    "server still running {SHUTDOWN_TIMEOUT:?} after SIGTERM; log:\n{}",
                    self.log_tail(8000)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the server again on the same data directory and port. A server
    /// that is still running is first stopped gracefully.
    pub async fn restart(&mut self) {
        if self.child.is_some() {
            self.stop().await;
        }
        self.spawn();
        self.wait_ready().await;
    }

    /// The last `max_bytes` of everything the server printed, across all runs.
    pub fn log_tail(&self, max_bytes: u64) -> String {
        let Ok(mut file) = File::open(&self.log_path) else {
            return String::from("(no log)");
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)))
            .ok();
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).ok();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill_hard();
        if std::thread::panicking() {
            // Captured by the test runner and shown next to the failure.
            eprintln!(
                "----- server log (tail) -----\n{}\n-----------------------------",
                self.log_tail(6000)
            );
        }
    }
}

/// On Linux, have the kernel SIGKILL the server if the thread that spawned it
/// dies, so an aborted test run (Ctrl-C, CI timeout) leaves no server behind.
#[cfg(target_os = "linux")]
fn kill_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[cfg(not(target_os = "linux"))]
fn kill_with_parent(_cmd: &mut Command) {}

/// `TERN_BIN` if set, else `homeserver` next to the test executable's folder:
/// test binaries live in `<target>/release/deps/`, the server in `<target>/release/`.
pub fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("TERN_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(|release| release.join("homeserver"))
        .expect("test executable has no grandparent folder")
}

/// Asks the OS for a free port by binding port 0, then releases it for the server.
/// Another process could grab it in between; on a test machine that is rare enough.
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// A reqwest client that never uses a proxy (the environment may set one) and
/// keeps no idle connections, so nothing stale survives a server restart.
fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .expect("build http client")
}

/// Percent-encodes one path segment or query value (everything but unreserved
/// characters), so `#alias:server`, `$event` and JSON filters survive the URL.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        Client {
            // Long enough for a 30 s long-poll sync plus slack.
            http: http_client(Duration::from_secs(60)),
            base_url: server.base_url(),
            access_token: None,
            user_id: String::new(),
            device_id: String::new(),
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
        let anon = Client::anonymous(server);
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
        let anon = Client::anonymous(server);
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

    /// `PUT /rooms/{room}/send/m.room.message/{txn}` with a text message.
    /// Returns the raw outcome, including network errors, for crash tests.
    pub async fn try_send_text(
        &self,
        room: &str,
        txn: &str,
        body: &str,
    ) -> Result<(u16, Value), reqwest::Error> {
        let content = json!({"msgtype": "m.text", "body": body});
        self.try_request(
            Method::PUT,
            &format!("{V3}/rooms/{}/send/m.room.message/{}", enc(room), enc(txn)),
            Some(serde_json::to_vec(&content).expect("serialize")),
            Some("application/json"),
        )
        .await
    }

    /// Sends a text message; returns its event id, panics on failure.
    pub async fn send_text(&self, room: &str, txn: &str, body: &str) -> String {
        let (status, resp) = self
            .try_send_text(room, txn, body)
            .await
            .unwrap_or_else(|e| panic!("send {txn}: {e}"));
        assert_eq!(status, 200, "send {txn}: {resp}");
        resp["event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no event_id in {resp}"))
            .to_owned()
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

/// The `next_batch` of a sync response; panics if missing.
#[track_caller]
pub fn next_batch(sync: &Value) -> String {
    sync["next_batch"]
        .as_str()
        .unwrap_or_else(|| panic!("no next_batch in {sync}"))
        .to_owned()
}
