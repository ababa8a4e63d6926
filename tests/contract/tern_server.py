"""Starts and stops a Tern homeserver binary for the contract tests.

The binary is named by the TERN_BIN environment variable. Each server gets a
free 127.0.0.1 port and a fresh data directory, runs in its own process group,
and is stopped with SIGTERM (SIGKILL after 10 s). The same pattern as
tests/interop/conftest.py, as a class so that a test can start more than one
server (the fuzzing run gets its own, so its junk does not meet the others).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def binary_from_env() -> str:
    binary = os.environ.get("TERN_BIN")
    if not binary:
        raise RuntimeError(
            "TERN_BIN is not set: point it at the built homeserver binary, e.g. "
            "TERN_BIN=target/release/homeserver pytest tests/contract"
        )
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise RuntimeError(f"TERN_BIN={binary!r} is not an executable file")
    return binary


class TernServer:
    """One running homeserver: `start()`, then `base_url`; `stop()` always."""

    def __init__(self, workdir: Path, *, rate_limits: bool = False, extra_args: list[str] | None = None):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "server.log"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cmd = [
            binary_from_env(),
            "--listen", f"127.0.0.1:{self.port}",
            "--server-name", "localhost",
            "--data-dir", str(self.data_dir),
            "--allow-registration",
        ]
        if not rate_limits:
            self.cmd.append("--disable-rate-limits")
        self.cmd += extra_args or []
        self.proc: subprocess.Popen | None = None
        self._log = None

    def start(self) -> "TernServer":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group
        )
        atexit.register(self.stop)  # last resort if teardown never runs
        try:
            self._wait_until_ready()
        except Exception:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        url = f"{self.base_url}/_matrix/client/versions"
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        last = "no attempt made"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"Tern exited with code {self.proc.returncode} before answering.\n"
                    f"command: {' '.join(self.cmd)}\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
                    last = f"HTTP {resp.status}"
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
            except (urllib.error.URLError, OSError) as e:
                last = repr(e)
            time.sleep(0.1)
        raise RuntimeError(f"Tern did not answer {url} within {STARTUP_TIMEOUT_S:.0f} s ({last}).\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 80) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError as e:
            return f"(could not read the server log {self.log_path}: {e})"
        tail = text.splitlines()[-lines:]
        return "--- server log ---\n" + ("\n".join(tail) if tail else "(empty)")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            try:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                    try:
                        proc.wait(timeout=SHUTDOWN_GRACE_S)
                    except subprocess.TimeoutExpired:
                        pass
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
