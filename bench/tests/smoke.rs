//! Smoke tests: short `tern-bench` runs of each mode against the real
//! `homeserver` binary must succeed, and lose or duplicate nothing.
//!
//! The server binary is not built by `cargo test -p tern-bench`; it is taken
//! from `TERN_BIN`, else `$CARGO_TARGET_DIR/release/homeserver`, else next to
//! this test's own build directory.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Kills the server when the test ends, also when it panics.
struct ServerGuard(Child);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_binary() -> PathBuf {
    let candidates = [
        std::env::var_os("TERN_BIN").map(PathBuf::from),
        std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("release/homeserver")),
        // target/release/deps/smoke-<hash> -> target/release/homeserver
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.parent()?.join("homeserver"))),
    ];
    candidates
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .expect("homeserver binary not found: build it with `cargo build --release -p homeserver` or set TERN_BIN")
}

/// The address in the server's "listening addr=..." log line.
fn logged_addr(log: &str) -> Option<String> {
    let rest = log.split("listening addr=").nth(1)?;
    let addr: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
        .collect();
    (!addr.is_empty()).then_some(addr)
}

/// A homeserver on a free port with its own data directory, killed on drop.
struct Server {
    guard: ServerGuard,
    addr: String,
    log_path: PathBuf,
    tmp: tempfile::TempDir,
}

impl Server {
    fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let log_path = tmp.path().join("server.log");
        let log = std::fs::File::create(&log_path).unwrap();
        // Port 0: the server binds a free port itself and logs which, so
        // tests running side by side can never race for one.
        let child = Command::new(server_binary())
            .args([
                "--listen",
                "127.0.0.1:0",
                "--server-name",
                "localhost",
                "--data-dir",
            ])
            .arg(tmp.path().join("data"))
            .args(["--allow-registration", "--disable-rate-limits"])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start homeserver");
        let mut server = Self {
            guard: ServerGuard(child),
            addr: String::new(),
            log_path,
            tmp,
        };
        let started = Instant::now();
        loop {
            if server.addr.is_empty() {
                server.addr = logged_addr(&server.log()).unwrap_or_default();
            }
            if !server.addr.is_empty() && TcpStream::connect(&server.addr).is_ok() {
                break;
            }
            if let Some(status) = server.guard.0.try_wait().unwrap() {
                panic!(
                    "homeserver exited with {status} before listening:\n{}",
                    server.log()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "homeserver did not listen within 30 s:\n{}",
                server.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Runs tern-bench against this server with `args` (plus --url,
    /// --server-pid and --json); asserts it succeeded and returns the report.
    fn bench(&self, args: &[&str]) -> Value {
        let report_path = self.tmp.path().join("report.json");
        let output = Command::new(env!("CARGO_BIN_EXE_tern-bench"))
            .args(["--url", &format!("http://{}", self.addr)])
            .args(args)
            .arg("--server-pid")
            .arg(self.guard.0.id().to_string())
            .arg("--json")
            .arg(&report_path)
            .output()
            .expect("run tern-bench");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success(),
            "tern-bench failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
            output.status,
            self.log()
        );
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap()
    }
}

/// Reads an unsigned number from the report or fails the test naming it.
fn num(report: &Value, pointer: &str) -> u64 {
    report
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("{pointer} missing from report: {report}"))
}

#[test]
fn short_run_loses_nothing() {
    let server = Server::start();
    let report = server.bench(&["--users", "4", "--duration", "2", "--concurrency", "4"]);
    let num = |pointer: &str| num(&report, pointer);
    assert!(num("/sends/acked") > 0, "nothing acknowledged: {report}");
    assert_eq!(num("/delivery/lost"), 0, "{report}");
    assert_eq!(num("/delivery/duplicated"), 0, "{report}");
    assert!(num("/delivery/expected") > 0, "{report}");
    assert_eq!(
        num("/delivery/received"),
        num("/delivery/expected"),
        "{report}"
    );
    assert!(report.pointer("/server/cpu_s").is_some(), "{report}");
}

#[test]
fn idle_syncs_are_held_and_live() {
    let server = Server::start();
    let report = server.bench(&[
        "--mode",
        "idle-syncs",
        "--idle-syncs",
        "50",
        "--idle-users",
        "5",
    ]);
    let num = |pointer: &str| num(&report, pointer);
    assert_eq!(report["mode"], "idle-syncs", "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(num("/after/syncs_open"), 50, "{report}");
    assert!(
        num("/after/open_fds") >= num("/before/open_fds") + 50,
        "the server did not accept every connection: {report}"
    );
    let per_sync = report["bytes_per_idle_sync"].as_f64().unwrap();
    assert!(per_sync > 0.0, "{report}");
    assert_eq!(num("/failures"), 0, "{report}");
    assert_eq!(num("/early_returns"), 0, "{report}");
    // Users 0 and 1 share the room: 2 of every 5 syncs, all of which return.
    assert_eq!(num("/liveness/syncs_expected"), 20, "{report}");
    assert_eq!(num("/liveness/returned_with_message"), 20, "{report}");
}

#[test]
fn fanout_reaches_every_member() {
    let server = Server::start();
    let report = server.bench(&["--mode", "fanout", "--users", "20", "--messages", "5"]);
    let num = |pointer: &str| num(&report, pointer);
    assert_eq!(report["mode"], "fanout", "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(num("/sends/acked"), 5, "{report}");
    assert_eq!(num("/complete_messages"), 5, "{report}");
    assert_eq!(num("/all_members_ms/count"), 5, "{report}");
    assert_eq!(num("/delivery/expected"), 5 * 19, "{report}");
    assert_eq!(num("/delivery/received"), 5 * 19, "{report}");
    assert_eq!(num("/delivery/lost"), 0, "{report}");
    assert_eq!(num("/delivery/duplicated"), 0, "{report}");
    assert_eq!(num("/sync/limited_timelines"), 0, "{report}");
    let all = report["all_members_ms"]["max"].as_f64().unwrap();
    let pair = report["delivery"]["latency_ms"]["max"].as_f64().unwrap();
    // The last member of a message is one of its (message, recipient) pairs.
    assert_eq!(all, pair, "{report}");
}

#[test]
fn chat_delivers_with_typing_and_receipts() {
    let server = Server::start();
    let report = server.bench(&[
        "--mode",
        "chat",
        "--users",
        "12",
        "--rooms-per-user",
        "3",
        "--room-size",
        "4",
        "--rate",
        "20",
        "--duration",
        "2",
    ]);
    let num = |pointer: &str| num(&report, pointer);
    assert_eq!(report["mode"], "chat", "{report}");
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(num("/config/rooms"), 9, "{report}");
    assert!(num("/sends/acked") > 0, "{report}");
    assert_eq!(num("/delivery/lost"), 0, "{report}");
    assert_eq!(num("/delivery/duplicated"), 0, "{report}");
    assert_eq!(
        num("/delivery/received"),
        num("/delivery/expected"),
        "{report}"
    );
    assert!(num("/typing/requests") > 0, "{report}");
    assert_eq!(num("/typing/errors"), 0, "{report}");
    assert!(num("/receipts/requests") > 0, "{report}");
    assert_eq!(num("/receipts/errors"), 0, "{report}");
    assert!(report.pointer("/server/cpu_s").is_some(), "{report}");
}

#[test]
fn encrypted_chat_delivers_every_room_key_once() {
    let server = Server::start();
    let report = server.bench(&[
        "--mode",
        "chat",
        "--encrypted",
        "--users",
        "12",
        "--rooms-per-user",
        "3",
        "--room-size",
        "4",
        "--rate",
        "20",
        "--duration",
        "2",
    ]);
    let num = |pointer: &str| num(&report, pointer);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["config"]["encrypted"], true, "{report}");
    assert_eq!(num("/e2ee/keys_upload/devices"), 12, "{report}");
    assert_eq!(num("/delivery/lost"), 0, "{report}");
    assert_eq!(
        num("/delivery/received"),
        num("/delivery/expected"),
        "{report}"
    );
    // Every share reaches the other 3 members' devices, exactly once.
    let shares = num("/e2ee/room_key_shares/shares");
    assert!(shares > 0, "{report}");
    assert_eq!(num("/e2ee/send_to_device/requests"), shares, "{report}");
    assert_eq!(
        num("/e2ee/to_device_delivery/expected"),
        3 * shares,
        "{report}"
    );
    assert_eq!(
        num("/e2ee/to_device_delivery/received"),
        3 * shares,
        "{report}"
    );
    assert_eq!(num("/e2ee/to_device_delivery/lost"), 0, "{report}");
    assert_eq!(num("/e2ee/to_device_delivery/duplicated"), 0, "{report}");
    assert_eq!(num("/e2ee/keys_claim/keys_missing"), 0, "{report}");
    assert_eq!(num("/e2ee/keys_query/mismatched_devices"), 0, "{report}");
    assert!(num("/e2ee/keys_claim/keys_claimed") > 0, "{report}");
    assert_eq!(
        num("/e2ee/encrypted_messages/messages"),
        num("/sends/attempted"),
        "{report}"
    );
}
