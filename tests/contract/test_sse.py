"""The SSE sync stream against its description in the spec.

Checks what `GET /_matrix/client/v3/sync` (with `Accept: text/event-stream`)
and `GET /_matrix/client/unstable/org.matrix.msc2108/sync/stream` answer:
status and media type as documented, events framed as documented
(`event: sync`, `id: <next_batch>`, `data: <SyncResponse JSON>`), each
`data` valid against the spec's `SyncResponse`, keep-alive comments, and
resuming with `Last-Event-ID`.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import pytest
import requests

from contract import Contract
from flows import q, register, unique

V3 = "/_matrix/client/v3"
STREAM = "/_matrix/client/unstable/org.matrix.msc2108/sync/stream"
KEEP_ALIVE_MS = 300


class SseReader:
    """Reads an SSE response on a thread; `next_event()` waits for one."""

    def __init__(self, response: requests.Response):
        self.response = response
        self.events: queue.Queue = queue.Queue()
        self.comments: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, list[str]] = {}
        try:
            for raw in self.response.iter_lines(chunk_size=1, decode_unicode=True):
                line = raw if raw is not None else ""
                if line == "":
                    if fields:
                        self.events.put({k: "\n".join(v) for k, v in fields.items()})
                    fields = {}
                elif line.startswith(":"):
                    self.comments.append(line[1:].strip())
                else:
                    name, _, value = line.partition(":")
                    fields.setdefault(name, []).append(value[1:] if value.startswith(" ") else value)
        except Exception as e:  # the connection was closed by the test
            self.events.put({"error": repr(e)})

    def next_event(self, timeout: float = 15) -> dict:
        event = self.events.get(timeout=timeout)
        assert "error" not in event, event
        return event

    def close(self) -> None:
        self.response.close()


@pytest.fixture(scope="module")
def sse_server(tern_factory):
    return tern_factory(extra_args=["--sse-keep-alive-ms", str(KEEP_ALIVE_MS)])


@pytest.fixture(scope="module")
def sse_contract(sse_server):
    return Contract(sse_server.base_url)


def open_stream(contract: Contract, path: str, *, token: str, headers: dict | None = None, params: dict | None = None) -> SseReader:
    """Opens a stream as a browser's EventSource would (token in the query)."""
    params = {"access_token": token, **(params or {})}
    response = contract.http.get(contract.base_url + path, params=params, headers=headers or {}, stream=True, timeout=(10, 30))
    op = contract.operation("GET", path)
    documented = contract.spec["paths"][op.template]["get"]["responses"]
    assert str(response.status_code) in documented, response.text
    assert response.status_code == 200, response.text
    media_type = response.headers["content-type"].split(";")[0].strip()
    assert media_type in documented["200"]["content"], media_type
    assert media_type == "text/event-stream"
    contract.record("GET", path, 200)
    return SseReader(response)


def check_event(contract: Contract, event: dict) -> dict:
    assert event.get("event") == "sync", event
    body = json.loads(event["data"])
    contract.validate_schema("SyncResponse", body)
    assert event["id"] == body["next_batch"]
    return body


def test_sync_answers_an_event_stream_when_asked(sse_contract):
    c = sse_contract
    alice, bob = register(c, unique("alice")), register(c, unique("bob"))
    room = c.call("POST", f"{V3}/createRoom", token=alice["access_token"], json_body={"invite": [bob["user_id"]]}).json()["room_id"]
    c.call("POST", f"{V3}/join/{q(room)}", token=bob["access_token"], json_body={})
    stream = open_stream(c, f"{V3}/sync", token=bob["access_token"], headers={"Accept": "text/event-stream"})
    try:
        first = check_event(c, stream.next_event())
        assert room in first["rooms"]["join"]
        event_id = c.call("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{unique('t')}", token=alice["access_token"],
                          json_body={"msgtype": "m.text", "body": "over SSE"}).json()["event_id"]
        deadline = time.monotonic() + 15
        seen = []
        while event_id not in seen and time.monotonic() < deadline:
            body = check_event(c, stream.next_event())
            for joined in body["rooms"]["join"].values():
                seen += [e["event_id"] for e in joined["timeline"]["events"]]
        assert event_id in seen
        time.sleep(KEEP_ALIVE_MS * 3 / 1000)
        assert stream.comments, "no keep-alive comment"
    finally:
        stream.close()
    # Without the Accept header the same endpoint still answers JSON.
    c.call("GET", f"{V3}/sync", token=bob["access_token"])


def test_msc2108_stream_resumes_after_last_event_id(sse_contract):
    c = sse_contract
    alice, bob = register(c, unique("alice")), register(c, unique("bob"))
    room = c.call("POST", f"{V3}/createRoom", token=alice["access_token"], json_body={"invite": [bob["user_id"]]}).json()["room_id"]
    c.call("POST", f"{V3}/join/{q(room)}", token=bob["access_token"], json_body={})

    def send(body: str) -> str:
        return c.call("PUT", f"{V3}/rooms/{q(room)}/send/m.room.message/{unique('t')}", token=alice["access_token"],
                      json_body={"msgtype": "m.text", "body": body}).json()["event_id"]

    before = send("before")
    stream = open_stream(c, STREAM, token=bob["access_token"])
    try:
        first = check_event(c, stream.next_event())
        last_id = first["next_batch"]
    finally:
        stream.close()
    missed = send("while away")
    # EventSource reconnects to the same URL with Last-Event-ID.
    stream = open_stream(c, STREAM, token=bob["access_token"], headers={"Last-Event-ID": last_id})
    try:
        resumed = check_event(c, stream.next_event())
        ids = [e["event_id"] for e in resumed["rooms"]["join"][room]["timeline"]["events"]]
        assert missed in ids and before not in ids
    finally:
        stream.close()
    # An explicit acknowledgement of what was processed.
    c.call("POST", "/_matrix/client/unstable/tern/sync/ack", token=bob["access_token"], json_body={"next_batch": resumed["next_batch"]})
    c.call("POST", "/_matrix/client/unstable/tern/sync/ack", token=bob["access_token"], json_body={"next_batch": "nonsense"}, expect=400, errcode="M_INVALID_PARAM")
    c.call("POST", "/_matrix/client/unstable/tern/sync/ack", token=bob["access_token"], json_body={}, expect=400, errcode="M_BAD_JSON", check_request=False)


def test_stream_errors_are_plain_matrix_errors(sse_contract):
    c = sse_contract
    user = register(c, unique("carol"))
    c.call("GET", STREAM, expect=401, errcode="M_MISSING_TOKEN")
    c.call("GET", STREAM, token=user["access_token"], params={"since": "garbage"}, expect=400, errcode="M_INVALID_PARAM")
    c.call("GET", STREAM, token=user["access_token"], headers={"Last-Event-ID": "garbage"}, expect=400, errcode="M_INVALID_PARAM")
    c.call("GET", STREAM, token=user["access_token"], params={"filter": "424242"}, expect=404)
    c.call("GET", f"{V3}/sync", token=user["access_token"], headers={"Accept": "text/event-stream"}, params={"since": "garbage"}, expect=400)
