"""Helpers for the matrix-nio interop tests.

matrix-nio itself is used unchanged.  The only addition is a thin wrapper
around each client's ``send`` method that records every HTTP exchange
(method, URL, request body, status, response body), so that a failing
assertion can show exactly what nio sent and what the server answered.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Callable

from nio import (
    AsyncClient,
    AsyncClientConfig,
    BadEvent,
    RegisterResponse,
    SyncResponse,
    UnknownBadEvent,
    WhoamiResponse,
)

SERVER_NAME = "localhost"
BODY_LIMIT = 4000


@dataclass
class Exchange:
    method: str
    url: str
    request_body: str | None
    status: int | None
    response_body: str
    transport: Any = None  # the aiohttp ClientResponse nio got

    def render(self) -> str:
        req = _clip(self.request_body) if self.request_body else "(no body)"
        status = f"HTTP {self.status}" if self.status is not None else "no response"
        return (
            f"request:  {self.method} {self.url}\n"
            f"          body: {req}\n"
            f"response: {status}\n"
            f"          body: {_clip(self.response_body)}"
        )


def _clip(text: str | None) -> str:
    if text is None:
        return "(none)"
    return text if len(text) <= BODY_LIMIT else text[:BODY_LIMIT] + f"... ({len(text)} chars)"


def _record_traffic(client: AsyncClient) -> list[Exchange]:
    log: list[Exchange] = []
    original_send = client.send

    async def send(method, path, data=None, *args, **kwargs):
        body = data if isinstance(data, str) else (
            data.decode("utf-8", "replace") if isinstance(data, bytes) else None
        )
        url = client.homeserver + path
        try:
            resp = await original_send(method, path, data, *args, **kwargs)
        except Exception as e:
            log.append(Exchange(method, url, body, None, f"(transport error: {e!r})"))
            raise
        try:
            # aiohttp caches the body, so nio can still parse it afterwards.
            raw = await resp.read()
            text = raw.decode("utf-8", "replace")
        except Exception as e:  # pragma: no cover - diagnostic only
            text = f"(could not read body: {e!r})"
        log.append(Exchange(method, url, body, resp.status, text, resp))
        return resp

    client.send = send  # instance attribute: nio's _send calls self.send(...)
    return log


def describe(client: AsyncClient, resp: Any = None, what: str = "") -> str:
    """Explain a nio response: its type, and the HTTP exchange that produced it."""
    who = client.user_id or "(not logged in)"
    lines = [f"{what} [{who}]" if what else f"[{who}]"]
    if resp is not None:
        lines.append(f"nio returned {type(resp).__name__}: {resp}")
    log: list[Exchange] = getattr(client, "interop_traffic", [])
    transport = getattr(resp, "transport_response", None)
    match = next((x for x in reversed(log) if transport is not None and x.transport is transport), None)
    if match is None and log:
        match = log[-1]
        lines.append("last HTTP exchange of this client:")
    if match is not None:
        lines.append(match.render())
    return "\n".join(lines)


def bad_events(events: list) -> list:
    """Events nio could not parse (server sent something not matching the spec schema)."""
    return [e for e in events if isinstance(e, (BadEvent, UnknownBadEvent))]


def show_bad(events: list) -> str:
    return "\n".join(json.dumps(e.source, sort_keys=True) for e in bad_events(events))


@dataclass
class User:
    client: AsyncClient
    localpart: str
    user_id: str
    password: str
    device_id: str


@dataclass
class ClientFactory:
    base_url: str
    clients: list[AsyncClient] = field(default_factory=list)

    def new_client(self, user: str = "", store_path: str | None = None) -> AsyncClient:
        """A client; with `store_path`, an encrypting one (vodozemac) keeping
        its Olm account and sessions there."""
        config = AsyncClientConfig(
            # Surface 429s and connection failures instead of retrying forever.
            max_limit_exceeded=0,
            max_timeouts=0,
            request_timeout=30,
            store_sync_tokens=False,
            encryption_enabled=store_path is not None,
        )
        client = AsyncClient(self.base_url, user=user, config=config, store_path=store_path or "")
        client.interop_traffic = _record_traffic(client)
        self.clients.append(client)
        return client

    async def register(self, name: str, store_path: str | None = None) -> User:
        """Register a fresh user (unique localpart starting with `name`) and check the session."""
        localpart = f"{name}{secrets.token_hex(4)}"
        password = "pw-" + secrets.token_hex(8)
        client = self.new_client(store_path=store_path)
        resp = await client.register(localpart, password, device_name=f"interop {name}")
        assert isinstance(resp, RegisterResponse), describe(client, resp, f"register {localpart}")
        expected_id = f"@{localpart}:{SERVER_NAME}"
        assert resp.user_id == expected_id, describe(client, resp, "register returned another user id")
        assert resp.access_token, describe(client, resp, "register returned no access_token")
        assert resp.device_id, describe(client, resp, "register returned no device_id")
        assert client.logged_in and client.user_id == expected_id, (
            f"nio did not enter the logged-in state after registering {expected_id}"
        )
        who = await client.whoami()
        assert isinstance(who, WhoamiResponse), describe(client, who, "whoami right after register")
        assert who.user_id == expected_id, describe(client, who, "whoami names another user")
        return User(client, localpart, expected_id, password, resp.device_id)

    async def close_all(self) -> None:
        for client in self.clients:
            await client.close()


async def sync_ok(client: AsyncClient, what: str, **kwargs) -> SyncResponse:
    resp = await client.sync(**kwargs)
    assert isinstance(resp, SyncResponse), describe(client, resp, what)
    assert resp.next_batch, describe(client, resp, f"{what}: sync response has no next_batch")
    return resp


async def sync_until(
    client: AsyncClient,
    done: Callable[[SyncResponse], bool],
    what: str,
    *,
    deadline_s: float = 30.0,
    poll_timeout_ms: int = 5000,
    sync_filter: dict | None = None,
) -> list[SyncResponse]:
    """Long-poll /sync (continuing from the client's next_batch) until `done` says so.

    `done` is called with every response; it may accumulate state.  Returns
    all responses received.  Fails if `deadline_s` passes first.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    responses: list[SyncResponse] = []
    while True:
        resp = await sync_ok(
            client, what, timeout=poll_timeout_ms, since=client.next_batch, sync_filter=sync_filter
        )
        responses.append(resp)
        if done(resp):
            return responses
        if loop.time() > end:
            raise AssertionError(
                f"{what} [{client.user_id}]: condition not met after {deadline_s:.0f} s "
                f"of /sync ({len(responses)} responses)\n" + describe(client)
            )
