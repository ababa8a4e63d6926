//! [`TestServer`]: one `homeserver` process on a free loopback port.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::engine::TestDatabase;

/// How long a freshly spawned server gets to answer `/versions`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a server gets to exit after SIGTERM before we call it hung.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Flags that differ between tests; everything else is fixed by the harness.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Pass `--allow-registration`. Off only to test that registration is refused.
    pub allow_registration: bool,
    /// Extra environment for the server process (e.g. `TERN_PRESENCE_IDLE_MS`).
    pub env: Vec<(String, String)>,
    /// Contents of a TOML configuration file passed with `--config`.
    pub config_toml: Option<String>,
    /// `--server-name` (default `localhost`); federating servers carry
    /// their federation port in it.
    pub server_name: Option<String>,
    /// More command-line flags.
    pub args: Vec<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            allow_registration: true,
            env: Vec::new(),
            config_toml: None,
            server_name: None,
            args: Vec::new(),
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
    /// Where the data lives when the suite runs on PostgreSQL; dropped last.
    database: Option<TestDatabase>,
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

    /// Starts a server with options on an existing data directory: nodes of
    /// a cluster share one (and so one signing key).
    pub async fn start_in(dir: &Path, options: ServerOptions) -> Self {
        Self::launch(dir.to_path_buf(), None, options).await
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
            // 0: the server binds a free port itself and logs which, so two
            // tests can never race for the same port.
            port: 0,
            _data_tmp: data_tmp,
            log_path: log_tmp.path().join("server.log"),
            _log_tmp: log_tmp,
            // A test that configures its own database keeps it.
            database: match &options.config_toml {
                Some(toml) if toml.contains("[postgres]") => None,
                _ => TestDatabase::for_data_dir(&data_dir),
            },
            data_dir,
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
            .arg(self.options.server_name.as_deref().unwrap_or("localhost"))
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--disable-rate-limits");
        if self.options.allow_registration {
            cmd.arg("--allow-registration");
        }
        if let Some(database) = &self.database {
            cmd.arg("--postgres-url").arg(database.url());
        }
        cmd.args(&self.options.args);
        cmd.envs(self.options.env.iter().map(|(k, v)| (k, v)));
        if let Some(toml) = &self.options.config_toml {
            let path = self.log_path.with_file_name("tern.toml");
            std::fs::write(&path, toml).expect("write server config");
            cmd.arg("--config").arg(path);
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
        let mut url = format!("{}/_matrix/client/versions", self.base_url());
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
            if self.port == 0 {
                if let Some(port) = self.logged_port() {
                    self.port = port;
                    url = format!("{}/_matrix/client/versions", self.base_url());
                }
            }
            if self.port != 0 {
                if let Ok(resp) = http.get(&url).send().await {
                    if resp.status().as_u16() == 200 {
                        return;
                    }
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

    /// The port of the current run's "listening addr=127.0.0.1:PORT" log line.
    fn logged_port(&self) -> Option<u16> {
        let log = std::fs::read_to_string(&self.log_path).ok()?;
        let run = log.rsplit("===== run").next()?;
        let rest = run.split("listening addr=127.0.0.1:").nth(1)?;
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
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

/// A reqwest client that never uses a proxy (the environment may set one) and
/// keeps no idle connections, so nothing stale survives a server restart.
pub(crate) fn http_client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(timeout)
        .build()
        .expect("build http client")
}
