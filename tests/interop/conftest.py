"""Fixtures for the matrix-nio interop tests.

The server under test is the binary named by the TERN_BIN environment
variable.  It is started once per test session on a free 127.0.0.1 port with
a fresh data directory, and stopped (SIGTERM, then SIGKILL after 10 s) when
the session ends.
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

import pytest
import pytest_asyncio

from nio_helpers import ClientFactory

STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_GRACE_S = 10.0
LOG_TAIL_LINES = 80

# The one running server process (and its log), so that failing tests can
# show the server's log and a dead server is reported as such.
_SERVER: dict = {}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(could not read server log {path}: {e})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(server log is empty)"


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, SIGKILL it if still alive after 10 s."""
    if proc.poll() is not None:
        # The server itself is gone; make sure nothing it spawned outlives it.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=SHUTDOWN_GRACE_S)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def _wait_until_ready(proc: subprocess.Popen, base_url: str, log_path: Path) -> None:
    url = f"{base_url}/_matrix/client/versions"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    last_error = "no attempt made"
    while time.monotonic() < deadline:
        rc = proc.poll()
        if rc is not None:
            raise RuntimeError(
                f"Tern server exited with code {rc} before answering GET {url}.\n"
                f"--- server log ({log_path}) ---\n{_log_tail(log_path)}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
                last_error = f"HTTP {resp.status}"
        except urllib.error.HTTPError as e:
            last_error = f"HTTP {e.code}"
        except (urllib.error.URLError, OSError) as e:
            last_error = repr(e)
        time.sleep(0.1)
    raise RuntimeError(
        f"Tern server did not answer GET {url} with 200 within {STARTUP_TIMEOUT_S:.0f} s "
        f"(last result: {last_error}).\n"
        f"--- server log ({log_path}) ---\n{_log_tail(log_path)}"
    )


@pytest.fixture(scope="session")
def tern_server(tmp_path_factory) -> str:
    """Start the Tern homeserver and yield its base URL (http://127.0.0.1:PORT)."""
    binary = os.environ.get("TERN_BIN")
    if not binary:
        pytest.fail(
            "TERN_BIN is not set: point it at the built homeserver binary, e.g. "
            "TERN_BIN=target/release/homeserver pytest tests/interop",
            pytrace=False,
        )
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        pytest.fail(f"TERN_BIN={binary!r} is not an executable file", pytrace=False)

    workdir = tmp_path_factory.mktemp("tern")
    data_dir = workdir / "data"
    data_dir.mkdir()
    log_path = workdir / "server.log"
    port = _free_port()
    base_url = f"http://127.0.0.1:{port}"
    cmd = [
        binary,
        "--listen", f"127.0.0.1:{port}",
        "--server-name", "localhost",
        "--data-dir", str(data_dir),
        "--allow-registration",
        "--disable-rate-limits",
    ]

    log_file = open(log_path, "wb")
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        # Own process group, so that stopping it also stops anything it spawned.
        start_new_session=True,
    )
    # Last resort if the interpreter exits without running fixture teardown.
    atexit.register(_stop, proc)
    _SERVER.update(proc=proc, log_path=log_path, cmd=cmd, base_url=base_url)
    try:
        startup_error = None
        try:
            _wait_until_ready(proc, base_url, log_path)
        except RuntimeError as e:
            startup_error = f"{e}\ncommand: {' '.join(cmd)}"
        if startup_error:
            pytest.fail(startup_error, pytrace=False)
        yield base_url
    finally:
        _stop(proc)
        log_file.close()
        _SERVER.clear()


def server_died_message() -> str | None:
    """A description of the server's exit if it is no longer running, else None."""
    proc = _SERVER.get("proc")
    if proc is None or proc.poll() is None:
        return None
    return (
        f"the Tern server process exited with code {proc.returncode}\n"
        f"--- server log ({_SERVER['log_path']}) ---\n{_log_tail(_SERVER['log_path'])}"
    )


@pytest_asyncio.fixture
async def matrix(tern_server):
    """A factory for nio clients on the test server; closes them all afterwards."""
    factory = ClientFactory(tern_server)
    try:
        yield factory
    finally:
        await factory.close_all()
    died = server_died_message()
    if died:
        pytest.fail(died, pytrace=False)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and _SERVER.get("log_path"):
        report.sections.append(
            (f"Tern server log (last {LOG_TAIL_LINES} lines)", _log_tail(_SERVER["log_path"]))
        )
    return report
