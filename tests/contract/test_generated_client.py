"""A client generated from the spec works: proof that a third party can
implement against `api-spec/openapi.yaml` alone.

The client is generated at test time with openapi-python-client (PyPI) into
a temporary folder (nothing generated is committed), imported, and used to
register two users, create a room, invite, join, send a message and see it
arrive through `/sync`, all through its typed models.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid

import pytest

from spec import SPEC_PATH

PACKAGE = "tern_generated_client"


@pytest.fixture(scope="module")
def client_package(tmp_path_factory):
    out = tmp_path_factory.mktemp("generated")
    target = out / PACKAGE
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate",
         "--path", str(SPEC_PATH), "--meta", "none", "--output-path", str(target)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, f"generation failed:\n{result.stdout}\n{result.stderr}"
    # The generator warns about media bodies it cannot type (images, `*/*`)
    # and leaves those responses raw; everything else must be generated.
    for needed in ("api/account/register.py", "api/rooms/create_room.py", "api/room_events/send_message.py",
                   "api/sync/sync.py", "models/sync_response.py", "models/joined_room.py"):
        assert (target / needed).exists(), f"{needed} was not generated:\n{result.stdout}"
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def _register(client, username: str) -> str:
    """Registers with the generated models: the UIA round, then the account."""
    models = _module("models")
    register = _module("api.account.register")
    body = models.RegisterBody(username=username, password="generated pw")
    first = register.sync_detailed(client=client, body=body)
    assert first.status_code == 401
    assert isinstance(first.parsed, models.AuthenticationResponse)
    assert first.parsed.flows[0].stages == ["m.login.dummy"]
    body.auth = models.AuthenticationData(type_="m.login.dummy", session=first.parsed.session)
    account = register.sync(client=client, body=body)
    assert isinstance(account, models.RegisterResponse200), account
    return account.access_token


def test_generated_client_registers_creates_a_room_sends_and_syncs(client_package, tern):
    client_mod = _module("client")
    models = _module("models")
    create_room = _module("api.rooms.create_room")
    join_room = _module("api.room_membership.join_room")
    send_message = _module("api.room_events.send_message")
    sync = _module("api.sync.sync")

    anonymous = client_mod.Client(base_url=tern.base_url, raise_on_unexpected_status=True)
    suffix = uuid.uuid4().hex[:8]
    alice = client_mod.AuthenticatedClient(base_url=tern.base_url, token=_register(anonymous, f"gen_a{suffix}"), raise_on_unexpected_status=True)
    bob = client_mod.AuthenticatedClient(base_url=tern.base_url, token=_register(anonymous, f"gen_b{suffix}"), raise_on_unexpected_status=True)
    bob_id = f"@gen_b{suffix}:localhost"

    created = create_room.sync(client=alice, body=models.CreateRoomBody(
        name="Generated", preset=models.CreateRoomBodyPreset.PRIVATE_CHAT, invite=[bob_id]))
    assert isinstance(created, models.CreateRoomResponse200), created
    room_id = created.room_id

    before = sync.sync(client=bob)
    assert isinstance(before, models.SyncResponse), before
    assert room_id in before.rooms.invite.additional_properties

    joined = join_room.sync(room_id, client=bob, body=models.ReasonBody())
    assert joined.room_id == room_id

    content = models.EventContent.from_dict({"msgtype": "m.text", "body": "from a generated client"})
    sent = send_message.sync(room_id, "m.room.message", f"txn{suffix}", client=alice, body=content)
    assert isinstance(sent, models.SendMessageResponse200), sent

    after = sync.sync(client=bob, since=before.next_batch, timeout=10_000)
    assert isinstance(after, models.SyncResponse), after
    room = after.rooms.join.additional_properties[room_id]
    assert isinstance(room, models.JoinedRoom)
    bodies = {e.event_id: e.content.additional_properties.get("body") for e in room.timeline.events}
    assert bodies.get(sent.event_id) == "from a generated client"
    assert room.unread_notifications.notification_count >= 1


def test_generated_client_reports_documented_errors(client_package, tern):
    client_mod = _module("client")
    models = _module("models")
    whoami = _module("api.account.get_token_owner")
    bad = client_mod.AuthenticatedClient(base_url=tern.base_url, token="not-a-token")
    answer = whoami.sync_detailed(client=bad)
    assert answer.status_code == 401
    assert isinstance(answer.parsed, models.TokenError)
    assert answer.parsed.errcode == models.TokenErrorErrcode.M_UNKNOWN_TOKEN
