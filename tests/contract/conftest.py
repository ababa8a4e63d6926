"""Fixtures for the contract tests: one Tern server for the session (the
fuzzing test starts its own), and a spec-checking client for it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from contract import Contract  # noqa: E402
from tern_server import TernServer  # noqa: E402

_SERVERS: list[TernServer] = []


@pytest.fixture(scope="session")
def tern_factory(tmp_path_factory):
    """Starts servers on demand; all are stopped at the end of the session."""
    started = []

    def start(**kwargs) -> TernServer:
        try:
            server = TernServer(tmp_path_factory.mktemp("tern"), **kwargs).start()
        except RuntimeError as e:
            pytest.fail(str(e), pytrace=False)
        started.append(server)
        _SERVERS.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()
            _SERVERS.remove(server)


@pytest.fixture(scope="session")
def tern(tern_factory) -> TernServer:
    return tern_factory()


@pytest.fixture(scope="session")
def contract(tern) -> Contract:
    return Contract(tern.base_url)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for server in _SERVERS:
            state = "running" if server.alive() else "EXITED"
            report.sections.append((f"Tern server {server.base_url} ({state})", server.log_tail(60)))
    return report
