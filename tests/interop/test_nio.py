"""Interop: an unmodified matrix-nio AsyncClient against the Tern homeserver.

Each test registers its own users (unique names), so tests are independent
of each other and of the order they run in.  Failure messages carry the HTTP
request nio sent and the server's response (see nio_helpers.describe).
"""

from __future__ import annotations

import asyncio
import time

import pytest
from nio import (
    ErrorResponse,
    InviteMemberEvent,
    JoinedMembersResponse,
    JoinError,
    JoinResponse,
    LoginError,
    LoginResponse,
    LogoutResponse,
    MessageDirection,
    PowerLevelsEvent,
    ProfileGetDisplayNameResponse,
    ProfileSetDisplayNameResponse,
    RoomCreateEvent,
    RoomCreateResponse,
    RoomJoinRulesEvent,
    RoomMemberEvent,
    RoomMessagesResponse,
    RoomMessageText,
    RoomPreset,
    RoomSendResponse,
    WhoamiError,
    WhoamiResponse,
)

from nio_helpers import (
    User,
    bad_events,
    describe,
    show_bad,
    sync_ok,
    sync_until,
)

pytestmark = pytest.mark.asyncio

MESSAGE_COUNT = 30
PAGE_LIMIT = 10
# Ask for large timelines so that a spec-compliant server never needs to
# truncate the message burst in a single /sync response.
BIG_TIMELINE = {"room": {"timeline": {"limit": 100}}}


# --------------------------------------------------------------------------
# shared scenario steps
# --------------------------------------------------------------------------


async def create_dm(matrix) -> tuple[User, User, str, list]:
    """alice creates a DM with bob; bob sees the invite and joins.

    Returns (alice, bob, room_id, bob_view) where bob_view is the state and
    timeline of the room in bob's first sync after joining.
    """
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")

    created = await alice.client.room_create(
        is_direct=True,
        invite=[bob.user_id],
        preset=RoomPreset.trusted_private_chat,
    )
    assert isinstance(created, RoomCreateResponse), describe(alice.client, created, "create DM")
    room_id = created.room_id
    assert room_id.startswith("!"), describe(alice.client, created, "room id is not a room id")

    # bob's first sync (no since token) must list the room under rooms.invite.
    responses = await sync_until(
        bob.client, lambda r: room_id in r.rooms.invite, "bob waits for the DM invite"
    )
    invite = responses[-1].rooms.invite[room_id]
    assert room_id in bob.client.invited_rooms, "nio does not show the room as invited for bob"
    bob_invites = [
        e for e in invite.invite_state
        if isinstance(e, InviteMemberEvent) and e.state_key == bob.user_id
    ]
    assert bob_invites, (
        "invite_state of bob's invite has no m.room.member event for bob, so a client "
        "cannot tell who invited him\n"
        f"invite_state: {[getattr(e, 'source', e) for e in invite.invite_state]}\n"
        + describe(bob.client)
    )
    assert bob_invites[0].membership == "invite"
    assert bob_invites[0].sender == alice.user_id, f"invite sent by {bob_invites[0].sender}"
    assert bob_invites[0].content.get("is_direct") is True, (
        "bob's invite member event lacks content.is_direct=true, so clients won't show it as a DM: "
        f"{bob_invites[0].source}"
    )

    joined = await bob.client.join(room_id)
    assert isinstance(joined, JoinResponse), describe(bob.client, joined, "bob joins the DM")
    assert joined.room_id == room_id, describe(bob.client, joined, "join answered another room")

    joined_syncs = await sync_until(
        bob.client, lambda r: room_id in r.rooms.join, "bob sees the DM as joined"
    )
    assert room_id in bob.client.rooms and room_id not in bob.client.invited_rooms
    info = joined_syncs[-1].rooms.join[room_id]
    bob_view = info.state + info.timeline.events
    assert not bad_events(bob_view), "nio could not parse some room events:\n" + show_bad(bob_view)
    return alice, bob, room_id, bob_view


async def dm_with_history(matrix):
    """A DM in which alice sent MESSAGE_COUNT texts that bob received live via /sync.

    Returns (alice, bob, room_id, sent) with sent = [(event_id, body), ...] in send order.
    """
    alice, bob, room_id, _ = await create_dm(matrix)
    # bob is caught up; from here on he long-polls while alice types.
    await sync_ok(bob.client, "bob catches up", timeout=0, since=bob.client.next_batch)

    received: list[RoomMessageText] = []
    limited_flags: list[bool] = []

    def collect(resp) -> bool:
        info = resp.rooms.join.get(room_id)
        if info is not None:
            limited_flags.append(info.timeline.limited)
            assert not bad_events(info.timeline.events), (
                "nio could not parse some timeline events:\n" + show_bad(info.timeline.events)
            )
            received.extend(e for e in info.timeline.events if isinstance(e, RoomMessageText))
        return len(received) >= MESSAGE_COUNT

    async def alice_sends():
        sent = []
        for i in range(MESSAGE_COUNT):
            body = f"hello bob, message {i:02d}"
            resp = await alice.client.room_send(
                room_id, "m.room.message", {"msgtype": "m.text", "body": body}
            )
            assert isinstance(resp, RoomSendResponse), describe(alice.client, resp, f"send #{i}")
            assert resp.event_id and resp.event_id.startswith("$"), describe(
                alice.client, resp, f"send #{i} returned no event_id"
            )
            sent.append((resp.event_id, body))
        return sent

    bob_loop = asyncio.create_task(
        sync_until(
            bob.client, collect, "bob receives alice's messages",
            deadline_s=60, poll_timeout_ms=10_000, sync_filter=BIG_TIMELINE,
        )
    )
    try:
        sent = await alice_sends()
        await bob_loop
    finally:
        bob_loop.cancel()

    assert len({eid for eid, _ in sent}) == MESSAGE_COUNT, "room_send returned duplicate event ids"
    got = [(e.event_id, e.body) for e in received]
    assert got == sent, (
        f"bob's /sync delivered {len(got)} messages that differ from the {len(sent)} alice sent "
        f"(timeline.limited flags per response: {limited_flags})\n"
        f"sent:     {[b for _, b in sent]}\nreceived: {[b for _, b in got]}"
    )
    assert all(e.sender == alice.user_id for e in received), {e.sender for e in received}
    return alice, bob, room_id, sent


async def paginate_back(user: User, room_id: str, token: str) -> list:
    """room_messages backwards from `token` until the server says there is no more."""
    events: list = []
    pages = 0
    while True:
        resp = await user.client.room_messages(
            room_id, start=token, limit=PAGE_LIMIT, direction=MessageDirection.back
        )
        assert isinstance(resp, RoomMessagesResponse), describe(
            user.client, resp, f"room_messages page {pages + 1}"
        )
        pages += 1
        assert len(resp.chunk) <= PAGE_LIMIT, describe(
            user.client, resp, f"page {pages} has {len(resp.chunk)} events, limit was {PAGE_LIMIT}"
        )
        assert not bad_events(resp.chunk), (
            "nio could not parse some events from /messages:\n" + show_bad(resp.chunk)
        )
        events.extend(resp.chunk)
        if not resp.chunk or resp.end is None:
            return events
        assert resp.end != token, describe(
            user.client, resp, "pagination token did not advance (end == start) with a non-empty chunk"
        )
        token = resp.end
        assert pages < 30, describe(user.client, resp, "pagination did not end after 30 pages")


def check_full_history(chronological: list, alice: User, bob: User, sent) -> None:
    """What a user scrolling back to the top of the DM must see, oldest first."""
    ids = [e.event_id for e in chronological]
    dupes = {i for i in ids if ids.count(i) > 1}
    assert not dupes, f"events returned more than once: {sorted(dupes)}"

    texts = [(e.event_id, e.body) for e in chronological if isinstance(e, RoomMessageText)]
    assert texts == sent, (
        f"history holds {len(texts)} messages that differ from the {len(sent)} sent\n"
        f"expected: {[b for _, b in sent]}\ngot:      {[b for _, b in texts]}"
    )

    summary = [f"{type(e).__name__}({getattr(e, 'source', {}).get('type')})" for e in chronological[:12]]
    first = chronological[0] if chronological else None
    assert isinstance(first, RoomCreateEvent), (
        f"the oldest event in the room history is not m.room.create: {summary}"
    )
    assert first.sender == alice.user_id, f"m.room.create sent by {first.sender}"

    def index_of(pred, what):
        for i, e in enumerate(chronological):
            if pred(e):
                return i
        raise AssertionError(f"room history lacks {what}; oldest events: {summary}")

    def member(user, membership):
        return lambda e: (
            isinstance(e, RoomMemberEvent) and e.state_key == user.user_id and e.membership == membership
        )

    alice_join = index_of(member(alice, "join"), "alice's join")
    assert alice_join == 1, f"alice's join is not right after m.room.create: {summary}"
    join_rules = index_of(lambda e: isinstance(e, RoomJoinRulesEvent), "m.room.join_rules")
    assert chronological[join_rules].join_rule == "invite", (
        f"trusted_private_chat room has join_rule {chronological[join_rules].join_rule!r}"
    )
    index_of(lambda e: isinstance(e, PowerLevelsEvent), "m.room.power_levels")
    bob_invite = index_of(member(bob, "invite"), "bob's invite")
    assert chronological[bob_invite].content.get("is_direct") is True, chronological[bob_invite].source
    bob_join = index_of(member(bob, "join"), "bob's join")
    first_msg = index_of(lambda e: isinstance(e, RoomMessageText), "a message")
    assert alice_join < bob_invite < bob_join < first_msg, (
        f"history order wrong: alice join @{alice_join}, bob invite @{bob_invite}, "
        f"bob join @{bob_join}, first message @{first_msg}"
    )


def _room_version_at_least(version: str, n: int) -> bool:
    try:
        return int(version) >= n
    except ValueError:
        return False


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------


async def test_register_and_login(matrix):
    alice = await matrix.register("alice")  # also checks nio's logged-in state and whoami
    bob = await matrix.register("bob")
    assert alice.user_id != bob.user_id
    assert alice.client.access_token != bob.client.access_token

    # The same name cannot be registered twice.
    again = matrix.new_client()
    dup = await again.register(alice.localpart, "another-password")
    assert isinstance(dup, ErrorResponse) and dup.status_code == "M_USER_IN_USE", describe(
        again, dup, "registering a taken username"
    )
    assert not again.logged_in

    # Password login from a second device.
    laptop = matrix.new_client(user=alice.user_id)
    login = await laptop.login(alice.password, device_name="alice laptop")
    assert isinstance(login, LoginResponse), describe(laptop, login, "password login")
    assert login.user_id == alice.user_id, describe(laptop, login, "login returned another user")
    assert login.device_id and login.device_id != alice.device_id, describe(
        laptop, login, f"second login reused device {alice.device_id}"
    )
    who = await laptop.whoami()
    assert isinstance(who, WhoamiResponse) and who.user_id == alice.user_id, describe(laptop, who)
    assert who.device_id == login.device_id, describe(laptop, who, "whoami names another device")

    # A wrong password is refused.
    intruder = matrix.new_client(user=alice.user_id)
    bad = await intruder.login("wrong-password")
    assert isinstance(bad, LoginError), describe(intruder, bad, "login with a wrong password")
    assert bad.status_code == "M_FORBIDDEN", describe(intruder, bad, "wrong-password errcode")
    assert not intruder.logged_in


async def test_direct_message_invite_and_join(matrix):
    alice, bob, room_id, bob_view = await create_dm(matrix)

    # alice sees bob join.
    def bob_joined(resp) -> bool:
        info = resp.rooms.join.get(room_id)
        return info is not None and any(
            isinstance(e, RoomMemberEvent) and e.state_key == bob.user_id and e.membership == "join"
            for e in info.timeline.events + info.state
        )

    await sync_until(alice.client, bob_joined, "alice sees bob's join")
    assert bob.user_id in alice.client.rooms[room_id].users, "bob missing from alice's member list"
    assert alice.user_id in bob.client.rooms[room_id].users, "alice missing from bob's member list"

    # trusted_private_chat: the invitee gets the creator's power.  Since room
    # version 12 that means being listed in the create event's
    # additional_creators; before, an equal power level in m.room.power_levels.
    create = next((e for e in bob_view if isinstance(e, RoomCreateEvent)), None)
    assert create is not None, (
        "bob's first sync after joining has no m.room.create in the room's state or timeline: "
        f"{[getattr(e, 'source', e) for e in bob_view]}"
    )
    create_content = create.source.get("content", {})
    if "additional_creators" in create_content or _room_version_at_least(create.room_version, 12):
        assert bob.user_id in create_content.get("additional_creators", []), (
            f"room version {create.room_version}: trusted_private_chat must list the invitee in "
            f"m.room.create additional_creators: {create.source}"
        )
    else:
        levels = bob.client.rooms[room_id].power_levels
        assert levels.get_user_level(alice.user_id) == 100, levels
        assert levels.get_user_level(bob.user_id) == 100, (
            "trusted_private_chat must give the invitee the creator's power level; bob has "
            f"{levels.get_user_level(bob.user_id)} in room version {create.room_version}"
        )

    # Someone who was not invited can neither join nor read the DM.
    eve = await matrix.register("eve")
    join = await eve.client.join(room_id)
    assert isinstance(join, JoinError), describe(eve.client, join, "uninvited eve joins the DM")
    assert join.status_code == "M_FORBIDDEN", describe(eve.client, join, "errcode for uninvited join")
    await sync_ok(eve.client, "eve's initial sync", timeout=0)
    peek = await eve.client.room_messages(room_id, start=eve.client.next_batch, limit=10)
    assert isinstance(peek, ErrorResponse), describe(eve.client, peek, "outsider reads the DM's history")
    assert peek.status_code == "M_FORBIDDEN", describe(eve.client, peek, "errcode for outsider /messages")


async def test_direct_messages_arrive_in_order_via_sync(matrix):
    # All checks live in dm_with_history: every send gets an event_id, and
    # bob's long-polling /sync delivers all texts, in order, from alice.
    _, _, _, sent = await dm_with_history(matrix)
    assert len(sent) == MESSAGE_COUNT


async def test_history_pagination_from_sync_token(matrix):
    alice, bob, room_id, sent = await dm_with_history(matrix)
    token = bob.client.next_batch
    assert token

    back = await paginate_back(bob, room_id, token)
    # Backwards pagination returns newest first.
    texts = [(e.event_id, e.body) for e in back if isinstance(e, RoomMessageText)]
    assert texts == list(reversed(sent)), (
        "paginating back from the sync token did not return all messages, newest first, once each\n"
        f"expected: {[b for _, b in reversed(sent)]}\ngot:      {[b for _, b in texts]}"
    )
    check_full_history(list(reversed(back)), alice, bob, sent)


async def test_history_pagination_from_prev_batch(matrix):
    """A new device opens the DM: initial sync timeline + back-pagination from prev_batch."""
    alice, bob, room_id, sent = await dm_with_history(matrix)

    phone = matrix.new_client(user=bob.user_id)
    login = await phone.login(bob.password, device_name="bob phone")
    assert isinstance(login, LoginResponse), describe(phone, login, "bob logs in on a new device")
    first = await sync_ok(
        phone, "initial sync on the new device", timeout=0,
        sync_filter={"room": {"timeline": {"limit": 5}}},
    )
    info = first.rooms.join.get(room_id)
    assert info is not None, describe(phone, first, "initial sync does not list the DM as joined")
    timeline = info.timeline.events
    assert not bad_events(timeline), show_bad(timeline)
    assert timeline, describe(phone, first, "initial sync has an empty timeline for the DM")
    assert isinstance(timeline[-1], RoomMessageText) and timeline[-1].event_id == sent[-1][0], (
        "the newest event in the initial sync timeline is not alice's last message: "
        f"{timeline[-1].source if hasattr(timeline[-1], 'source') else timeline[-1]}"
    )
    assert info.timeline.prev_batch, describe(phone, first, "timeline has no prev_batch token")

    phone_user = User(phone, bob.localpart, bob.user_id, bob.password, login.device_id)
    older = await paginate_back(phone_user, room_id, info.timeline.prev_batch)
    check_full_history(list(reversed(older)) + timeline, alice, bob, sent)


async def test_group_room(matrix):
    alice = await matrix.register("alice")
    carol = await matrix.register("carol")
    dave = await matrix.register("dave")
    erin = await matrix.register("erin")
    everyone = [alice, carol, dave, erin]

    created = await alice.client.room_create(name="Interop lounge", preset=RoomPreset.public_chat)
    assert isinstance(created, RoomCreateResponse), describe(alice.client, created, "create group")
    room_id = created.room_id

    for user in (carol, dave, erin):
        joined = await user.client.join(room_id)
        assert isinstance(joined, JoinResponse), describe(user.client, joined, "join public room")
        assert joined.room_id == room_id, describe(user.client, joined)

    for user in everyone:
        await sync_until(
            user.client,
            lambda r: room_id in r.rooms.join,
            "initial sync shows the group as joined",
            poll_timeout_ms=0,
        )
        room = user.client.rooms[room_id]
        assert room.join_rule == "public", f"{user.user_id} sees join_rule {room.join_rule!r}"
        assert room.name == "Interop lounge", f"{user.user_id} sees room name {room.name!r}"

    # Member list as the server reports it.
    members = await erin.client.joined_members(room_id)
    assert isinstance(members, JoinedMembersResponse), describe(erin.client, members, "joined_members")
    assert {m.user_id for m in members.members} == {u.user_id for u in everyone}, describe(
        erin.client, members, "joined_members does not list exactly the four members"
    )
    # alice's client (built from /sync) shows everyone who joined after her.
    await sync_until(
        alice.client,
        lambda r: {u.user_id for u in everyone} <= set(alice.client.rooms[room_id].users),
        "alice's member list fills up",
    )

    # dave speaks while everyone else is long-polling /sync.
    body = "hi all, dave here"
    arrived: dict[str, float] = {}

    async def wait_for_dave(user: User) -> str:
        found: list[str] = []

        def seen(resp) -> bool:
            info = resp.rooms.join.get(room_id)
            for e in info.timeline.events if info else []:
                if isinstance(e, RoomMessageText) and e.body == body:
                    assert e.sender == dave.user_id, f"{user.user_id} saw sender {e.sender}"
                    arrived[user.user_id] = time.monotonic()
                    found.append(e.event_id)
            return bool(found)

        await sync_until(
            user.client, seen, f"{user.localpart} waits for dave's message",
            deadline_s=45, poll_timeout_ms=30_000,
        )
        assert len(found) == 1, f"{user.user_id} received dave's message {len(found)} times"
        return found[0]

    waiters = [asyncio.create_task(wait_for_dave(u)) for u in everyone]
    try:
        await asyncio.sleep(1.0)  # let the long-polls reach the server
        sent_at = time.monotonic()
        sent = await dave.client.room_send(
            room_id, "m.room.message", {"msgtype": "m.text", "body": body}
        )
        assert isinstance(sent, RoomSendResponse), describe(dave.client, sent, "dave sends")
        seen_ids = await asyncio.gather(*waiters)
    finally:
        for w in waiters:
            w.cancel()
    assert seen_ids == [sent.event_id] * len(everyone), (
        f"event ids seen {seen_ids} differ from the sent one {sent.event_id}"
    )
    slow = {u: round(t - sent_at, 1) for u, t in arrived.items() if t - sent_at > 10}
    assert not slow, (
        f"dave's message reached these long-polling (30 s) syncs only after >10 s: {slow}; "
        "the server does not wake waiting /sync requests when a new event arrives"
    )


async def test_profile_displayname(matrix):
    alice = await matrix.register("alice")
    bob = await matrix.register("bob")
    name = "Alice Interop ✓"

    resp = await alice.client.set_displayname(name)
    assert isinstance(resp, ProfileSetDisplayNameResponse), describe(alice.client, resp, "set_displayname")

    own = await alice.client.get_displayname()
    assert isinstance(own, ProfileGetDisplayNameResponse), describe(alice.client, own, "get own name")
    assert own.displayname == name, describe(alice.client, own, "own display name not updated")

    seen = await bob.client.get_displayname(alice.user_id)
    assert isinstance(seen, ProfileGetDisplayNameResponse), describe(bob.client, seen, "get alice's name")
    assert seen.displayname == name, describe(bob.client, seen, "bob sees another display name")


async def test_logout_revokes_token(matrix):
    alice = await matrix.register("alice")
    phone = matrix.new_client(user=alice.user_id)
    login = await phone.login(alice.password, device_name="alice phone")
    assert isinstance(login, LoginResponse), describe(phone, login, "second device login")

    old_token = alice.client.access_token
    before = await alice.client.whoami()
    assert isinstance(before, WhoamiResponse), describe(alice.client, before, "whoami before logout")

    out = await alice.client.logout()
    assert isinstance(out, LogoutResponse), describe(alice.client, out, "logout")
    assert not alice.client.logged_in

    # Re-use the old token, as a stale client would.
    alice.client.restore_login(alice.user_id, alice.device_id, old_token)
    after = await alice.client.whoami()
    assert isinstance(after, WhoamiError), describe(alice.client, after, "old token still works after logout")
    assert after.status_code == "M_UNKNOWN_TOKEN", describe(alice.client, after, "errcode for revoked token")
    status = after.transport_response.status
    assert status == 401, describe(alice.client, after, f"revoked token answered HTTP {status}, not 401")

    # Logging out one device leaves the other signed in.
    still = await phone.whoami()
    assert isinstance(still, WhoamiResponse) and still.user_id == alice.user_id, describe(
        phone, still, "the other device was logged out too"
    )
