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
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("synapse/synapse_fed_up.sh");
        let output = Command::new("bash")
            .arg(&script)
            .arg(dir.path())
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
        let pid = stdout
            .trim()
            .parse()
            .expect("synapse_fed_up.sh prints the PID");
        Self {
            pid,
            dir,
            name: format!("localhost:{federation_port}"),
            client_url: format!("http://127.0.0.1:{client_port}"),
        }
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
        // SAFETY: sends SIGTERM to the Synapse this struct started.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if self.alive() {
            // SAFETY: as above; it ignored SIGTERM.
            unsafe {
                libc::kill(self.pid as i32, libc::SIGKILL);
            }
        }
    }
}
