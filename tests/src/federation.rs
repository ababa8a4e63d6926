//! Servers that federate on loopback: Tern with its TLS listener, and
//! Synapse (from PyPI, started by `tests/synapse/synapse_fed_up.sh`) as the
//! reference peer. Server names carry the federation port
//! (`localhost:PORT`), so no DNS or `.well-known` is involved.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::{ServerOptions, TestServer};

/// A port nobody listens on right now (the kernel's choice).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free loopback port")
}

/// A self-signed certificate for `localhost` and 127.0.0.1, as PEM files.
pub struct TlsFiles {
    _dir: TempDir,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn localhost() -> Self {
        let cert = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .expect("self-signed certificate");
        let dir = tempfile::Builder::new()
            .prefix("tern-tls-")
            .tempdir()
            .expect("tls dir");
        let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        std::fs::write(&cert_path, cert.cert.pem()).expect("write certificate");
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).expect("write key");
        Self {
            _dir: dir,
            cert: cert_path,
            key: key_path,
        }
    }
}

/// A Tern server federating on loopback as `localhost:PORT`.
pub struct FederatingTern {
    pub server: TestServer,
    /// `localhost:PORT`.
    pub name: String,
    pub federation_port: u16,
    _tls: TlsFiles,
}

/// How a federating test server is set up.
#[derive(Clone, Debug)]
pub struct FederationOptions {
    /// `--federation-allow-private`: needed for any peer on loopback.
    pub allow_private: bool,
    /// Run `rotate-signing-key` on the data directory before starting.
    pub rotate_key_first: bool,
}

impl Default for FederationOptions {
    fn default() -> Self {
        Self {
            allow_private: true,
            rotate_key_first: false,
        }
    }
}

impl FederatingTern {
    pub async fn start() -> Self {
        Self::start_with(FederationOptions::default()).await
    }

    pub async fn start_with(options: FederationOptions) -> Self {
        let tls = TlsFiles::localhost();
        let federation_port = free_port();
        let name = format!("localhost:{federation_port}");
        let mut args = vec![
            "--federation-listen".to_owned(),
            format!("127.0.0.1:{federation_port}"),
            "--tls-cert".to_owned(),
            tls.cert.display().to_string(),
            "--tls-key".to_owned(),
            tls.key.display().to_string(),
            // Peers here have self-signed certificates.
            "--federation-insecure-skip-verify".to_owned(),
        ];
        if options.allow_private {
            args.push("--federation-allow-private".to_owned());
        }
        let server_options = ServerOptions {
            server_name: Some(name.clone()),
            args,
            ..ServerOptions::default()
        };
        let server = if options.rotate_key_first {
            let dir = tempfile::Builder::new()
                .prefix("tern-data-")
                .tempdir()
                .expect("data dir")
                .keep();
            rotate_signing_key(&dir);
            TestServer::start_in(&dir, server_options).await
        } else {
            TestServer::start_with(server_options).await
        };
        Self {
            server,
            name,
            federation_port,
            _tls: tls,
        }
    }

    /// `https://127.0.0.1:PORT`: the federation listener.
    pub fn federation_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.federation_port)
    }

    /// A user id on this server.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }
}

/// Makes a signing key, then retires it for a new one, as an operator would.
fn rotate_signing_key(data_dir: &Path) {
    let status = Command::new(crate::server_binary())
        .arg("--data-dir")
        .arg(data_dir)
        .arg("rotate-signing-key")
        .status()
        .expect("run rotate-signing-key");
    assert!(status.success(), "rotate-signing-key failed: {status}");
}

/// An HTTPS client that accepts the test servers' self-signed certificates.
pub fn insecure_https() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("https client")
}

/// One Synapse 1.163.2 on loopback, stopped when dropped.
pub struct Synapse {
    pid: u32,
    dir: TempDir,
    ports: (u16, u16),
    /// `localhost:FEDERATION_PORT`.
    pub name: String,
    /// Its client API, plain HTTP.
    pub client_url: String,
}

impl Synapse {
    /// Starts Synapse (installing it into a virtual environment on first
    /// use). Panics with its log if it does not come up.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("tern-synapse-")
            .tempdir()
            .expect("synapse dir");
        let (federation_port, client_port) = (free_port(), free_port());
        let pid = launch(dir.path(), federation_port, client_port);
        Self {
            pid,
            dir,
            ports: (federation_port, client_port),
            name: format!("localhost:{federation_port}"),
            client_url: format!("http://127.0.0.1:{client_port}"),
        }
    }

    /// Stops Synapse, as an outage would (its data stays).
    pub fn stop(&mut self) {
        terminate(self.pid, || self.alive());
    }

    /// Starts the stopped Synapse again on its data and ports.
    pub fn start_again(&mut self) {
        self.pid = launch(self.dir.path(), self.ports.0, self.ports.1);
    }

    /// A user id on this server.
    pub fn user(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.name)
    }

    /// The end of Synapse's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("homeserver.log"))
            .or_else(|_| std::fs::read_to_string(self.dir.path().join("stdout.log")))
            .unwrap_or_default();
        let start = log.len().saturating_sub(6000);
        log[log.floor_char_boundary(start)..].to_owned()
    }

    /// Whether the process still runs (a zombie nobody reaped does not:
    /// it is not our child, the start script's).
    fn alive(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
                Some(state != 'Z')
            })
            .unwrap_or(false)
    }
}

impl Drop for Synapse {
    fn drop(&mut self) {
        terminate(self.pid, || self.alive());
    }
}

/// Runs the start script on `dir` and the ports; the PID it prints.
fn launch(dir: &Path, federation_port: u16, client_port: u16) -> u32 {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("synapse/synapse_fed_up.sh");
    let output = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .arg(federation_port.to_string())
        .arg(client_port.to_string())
        .output()
        .expect("run synapse_fed_up.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "Synapse did not start: {}{}",
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .trim()
        .parse()
        .expect("synapse_fed_up.sh prints the PID")
}

/// SIGTERM, then SIGKILL if it has not stopped within 15 s.
fn terminate(pid: u32, alive: impl Fn() -> bool) {
    // SAFETY: signals the Synapse process this harness started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive() {
        // SAFETY: as above; it ignored SIGTERM.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
}

/// Speaks as a federating Tern server, with the signing key from its data
/// directory: what a hostile or broken peer can send is built from real
/// signatures, so the server under test fetches the key as it would.
pub struct Impersonator {
    pub name: String,
    pair: ruma_signatures::Ed25519KeyPair,
}

impl Impersonator {
    pub fn of(tern: &FederatingTern) -> Self {
        let text = std::fs::read_to_string(tern.server.data_dir().join("signing.key"))
            .expect("the server's signing key");
        let (version, encoded) = text.trim().split_once(' ').expect("version and key");
        let der = ruma_common::serde::Base64::<ruma_common::serde::base64::Standard>::parse(
            encoded.trim_end_matches('='),
        )
        .expect("base64 key");
        let pair = ruma_signatures::Ed25519KeyPair::from_der(der.as_bytes(), version.to_owned())
            .expect("an ed25519 key");
        Self {
            name: tern.name.clone(),
            pair,
        }
    }

    /// Hashes and signs a room version 11 PDU; returns it with its id.
    pub fn sign_pdu(&self, pdu: serde_json::Value) -> (String, serde_json::Value) {
        let mut object: ruma_common::CanonicalJsonObject =
            serde_json::from_value(pdu).expect("a JSON object");
        ruma_signatures::hash_and_sign_event(
            &self.name,
            &self.pair,
            &mut object,
            &ruma_common::room_version_rules::RedactionRules::V11,
        )
        .expect("signed");
        let value = serde_json::to_value(&object).unwrap();
        (event_id(&value), value)
    }

    /// A PUT signed with X-Matrix as this server, to `destination`'s
    /// federation listener; the status and the JSON answer.
    pub async fn put(
        &self,
        destination: &FederatingTern,
        uri: &str,
        body: &serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.request(destination, reqwest::Method::PUT, uri, Some(body))
            .await
    }

    /// A GET signed with X-Matrix as this server.
    pub async fn get(&self, destination: &FederatingTern, uri: &str) -> (u16, serde_json::Value) {
        self.request(destination, reqwest::Method::GET, uri, None)
            .await
    }

    async fn request(
        &self,
        destination: &FederatingTern,
        method: reqwest::Method,
        uri: &str,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let mut request = serde_json::json!({
            "method": method.as_str(), "uri": uri, "origin": self.name,
            "destination": destination.name,
        });
        if let Some(body) = body {
            request["content"] = body.clone();
        }
        let mut object: ruma_common::CanonicalJsonObject = serde_json::from_value(request).unwrap();
        ruma_signatures::sign_json(&self.name, &self.pair, &mut object).unwrap();
        let key_id = format!("ed25519:{}", self.pair.version());
        let sig = object["signatures"].clone();
        let sig = serde_json::to_value(&sig).unwrap()[&self.name][&key_id]
            .as_str()
            .unwrap()
            .to_owned();
        let header = format!(
            "X-Matrix origin=\"{}\",destination=\"{}\",key=\"{key_id}\",sig=\"{sig}\"",
            self.name, destination.name
        );
        let mut builder = insecure_https()
            .request(method, format!("{}{uri}", destination.federation_url()))
            .header("Authorization", header);
        if let Some(body) = body {
            builder = builder.json(body);
        }
        let response = builder
            .send()
            .await
            .expect("the federation listener answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or_default())
    }
}

/// The id of a room version 11 PDU: its reference hash.
pub fn event_id(pdu: &serde_json::Value) -> String {
    let object: ruma_common::CanonicalJsonObject = serde_json::from_value(pdu.clone()).unwrap();
    let hash = ruma_signatures::reference_hash(
        &object,
        &ruma_common::room_version_rules::RoomVersionRules::V11,
    )
    .unwrap();
    format!("${hash}")
}
