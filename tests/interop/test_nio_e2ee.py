"""Interop: end-to-end encryption with matrix-nio's own cryptography.

matrix-nio with its `e2e` extra encrypts with vodozemac (Olm and Megolm),
so these tests exercise Tern's key upload, query and claim, to-device
delivery and device-list tracking exactly as an encrypting client uses
them: if the server mishandles any of them, the recipient cannot decrypt.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from urllib.parse import quote

import pytest
from nio import (
    JoinResponse,
    KeysQueryResponse,
    KeysUploadResponse,
    LoginResponse,
    MegolmEvent,
    RoomCreateResponse,
    RoomMessageText,
    RoomSendResponse,
    SyncResponse,
)

from nio_helpers import User, describe, sync_ok, sync_until

pytestmark = pytest.mark.asyncio

ENCRYPTION = {
    "type": "m.room.encryption",
    "state_key": "",
    "content": {"algorithm": "m.megolm.v1.aes-sha2"},
}


async def upload_keys(user_client, what: str) -> None:
    resp = await user_client.keys_upload()
    assert isinstance(resp, KeysUploadResponse), describe(user_client, resp, what)
    assert resp.signed_curve25519_count > 0, describe(user_client, resp, f"{what}: no one-time keys counted")


async def send_secret(user: User, room_id: str, body: str) -> str:
    resp = await user.client.room_send(
        room_id,
        "m.room.message",
        {"msgtype": "m.text", "body": body},
        ignore_unverified_devices=True,
    )
    assert isinstance(resp, RoomSendResponse), describe(user.client, resp, f"send {body!r}")
    return resp.event_id


async def receive_secret(user, room_id: str, event_id: str, body: str) -> None:
    """Sync until the event arrives decrypted; an event that stays encrypted fails."""
    found: dict = {}

    def arrived(resp: SyncResponse) -> bool:
        room = resp.rooms.join.get(room_id)
        for event in room.timeline.events if room else []:
            if event.event_id == event_id:
                found["event"] = event
        return "event" in found

    await sync_until(user.client, arrived, f"wait for {body!r}")
    event = found["event"]
    assert not isinstance(event, MegolmEvent), (
        f"{user.user_id} could not decrypt {event_id}: {event}\n" + describe(user.client)
    )
    assert isinstance(event, RoomMessageText), f"unexpected event {event}"
    assert event.decrypted and event.body == body, f"decrypted to {event}"


def raw_event(base_url: str, user: User, room_id: str, event_id: str) -> dict:
    path = f"/_matrix/client/v3/rooms/{quote(room_id)}/event/{quote(event_id)}"
    request = urllib.request.Request(
        base_url + path, headers={"Authorization": f"Bearer {user.client.access_token}"}
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        return json.load(resp)


def store_dir(tmp_path, name: str) -> str:
    """A directory for one client's Olm store (nio does not create it)."""
    path = tmp_path / name
    path.mkdir()
    return str(path)


async def test_megolm_messages_both_ways_and_to_a_new_device(matrix, tmp_path):
    alice = await matrix.register("alice", store_path=store_dir(tmp_path, "alice"))
    bob = await matrix.register("bob", store_path=store_dir(tmp_path, "bob"))
    for user in (alice, bob):
        await upload_keys(user.client, f"upload keys of {user.user_id}")

    created = await alice.client.room_create(invite=[bob.user_id], initial_state=[ENCRYPTION])
    assert isinstance(created, RoomCreateResponse), describe(alice.client, created, "create room")
    room_id = created.room_id
    await sync_ok(bob.client, "bob's first sync")
    joined = await bob.client.join(room_id)
    assert isinstance(joined, JoinResponse), describe(bob.client, joined, "bob joins")
    await sync_until(
        alice.client,
        lambda _: bob.user_id in alice.client.rooms.get(room_id, None).users
        if room_id in alice.client.rooms
        else False,
        "alice sees bob join",
    )
    assert alice.client.rooms[room_id].encrypted

    # Alice to Bob: nio queries Bob's keys, claims a one-time key, sends the
    # room key to-device, then the Megolm-encrypted message.
    first = await send_secret(alice, room_id, "the eagle lands at dawn")
    await receive_secret(bob, room_id, first, "the eagle lands at dawn")
    # What the server holds is ciphertext (asked over plain HTTP: nio would
    # decrypt the answer).
    stored = await asyncio.to_thread(raw_event, matrix.base_url, bob, room_id, first)
    assert stored["type"] == "m.room.encrypted", stored
    assert "eagle" not in json.dumps(stored), stored
    # And back.
    await sync_ok(bob.client, "bob catches up")
    reply = await send_secret(bob, room_id, "copy that")
    await receive_secret(alice, room_id, reply, "copy that")

    # Bob logs in on a second device; Alice's sync tells her his devices
    # changed, she queries them and verifies the new one.
    second = matrix.new_client(user=bob.user_id, store_path=store_dir(tmp_path, "bob2"))
    login = await second.login(bob.password, device_name="bob's tablet")
    assert isinstance(login, LoginResponse), describe(second, login, "bob logs in again")
    await upload_keys(second, "upload keys of bob's second device")
    await sync_ok(second, "bob's second device syncs")
    await sync_until(
        alice.client,
        lambda resp: bob.user_id in resp.device_list.changed,
        "alice hears bob's devices changed",
    )
    queried = await alice.client.keys_query()
    assert isinstance(queried, KeysQueryResponse), describe(alice.client, queried, "key query")
    devices = alice.client.device_store[bob.user_id]
    assert login.device_id in devices, f"bob's new device missing from {list(devices)}"
    for device in devices.values():
        alice.client.verify_device(device)

    later = await send_secret(alice, room_id, "new device, same secrets")
    second_user = User(second, bob.localpart, bob.user_id, bob.password, login.device_id)
    await receive_secret(second_user, room_id, later, "new device, same secrets")
    await receive_secret(bob, room_id, later, "new device, same secrets")
