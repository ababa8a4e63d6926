//! Smoke test: a short `tern-bench` run against the real `homeserver` binary
//! must succeed, send something and lose or duplicate nothing.
//!
//! The server binary is not built by `cargo test -p tern-bench`; it is taken
//! from `TERN_BIN`, else `$CARGO_TARGET_DIR/release/homeserver`, else next to
//! this test's own build directory.

use std::net::{TcpListener, TcpStream};
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

/// A port that was free a moment ago (the OS picks it; the tiny window before
/// the server binds it is acceptable for a test).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn short_run_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let log_path = tmp.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let server = Command::new(server_binary())
        .args([
            "--listen",
            &addr,
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
    let mut server = ServerGuard(server);
    let server_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let started = Instant::now();
    while TcpStream::connect(&addr).is_err() {
        if let Some(status) = server.0.try_wait().unwrap() {
            panic!(
                "homeserver exited with {status} before listening:\n{}",
                server_log()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "homeserver did not listen within 30 s:\n{}",
            server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let report_path = tmp.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_tern-bench"))
        .args(["--url", &format!("http://{addr}")])
        .args(["--users", "4", "--duration", "2", "--concurrency", "4"])
        .arg("--server-pid")
        .arg(server.0.id().to_string())
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
        server_log()
    );

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    let num = |pointer: &str| {
        report
            .pointer(pointer)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{pointer} missing from report: {report}"))
    };
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
