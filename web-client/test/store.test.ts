import { describe, expect, it } from "vitest";

import {
  addEcho,
  applyMessages,
  applyPresence,
  applySync,
  confirmEcho,
  createState,
  directPartner,
  lastMessage,
  markRead,
  pendingReadReceipt,
  roomName,
  sortedRooms,
  tickOf,
  updateEcho,
  visibleItems,
  type MatrixEvent,
  type SyncResponse,
} from "../src/store";

const ALICE = "@alice:hs";
const BOB = "@bob:hs";
const CAROL = "@carol:hs";
const ROOM = "!room:hs";

let ts = 1000;
function message(id: string, sender: string, body: string, txnId?: string): MatrixEvent {
  return {
    event_id: id,
    type: "m.room.message",
    sender,
    origin_server_ts: ts++,
    content: { msgtype: "m.text", body },
    ...(txnId ? { unsigned: { transaction_id: txnId } } : {}),
  };
}
function member(userId: string, membership: string, extra: Record<string, unknown> = {}): MatrixEvent {
  return {
    event_id: `$m-${userId}-${membership}-${ts}`,
    type: "m.room.member",
    sender: userId,
    state_key: userId,
    origin_server_ts: ts++,
    content: { membership, displayname: userId.slice(1, userId.indexOf(":")), ...extra },
  };
}
function joined(next: string, room: Parameters<typeof withRoom>[1]): SyncResponse {
  return withRoom(next, room);
}
function withRoom(
  next: string,
  room: {
    events?: MatrixEvent[];
    state?: MatrixEvent[];
    limited?: boolean;
    prev?: string;
    ephemeral?: { type: string; content: Record<string, unknown> }[];
    unread?: number;
  },
): SyncResponse {
  return {
    next_batch: next,
    rooms: {
      join: {
        [ROOM]: {
          state: { events: room.state ?? [] },
          timeline: { events: room.events ?? [], limited: room.limited ?? false, prev_batch: room.prev ?? "t0" },
          ephemeral: { events: room.ephemeral ?? [] },
          ...(room.unread !== undefined ? { unread_notifications: { notification_count: room.unread, highlight_count: 0 } } : {}),
        },
      },
    },
  };
}
function receipt(eventId: string, type: string, userId: string, at = 5) {
  return { type: "m.receipt", content: { [eventId]: { [type]: { [userId]: { ts: at } } } } };
}
/** Alice's client after an initial sync of a 1:1 room with Bob. */
function dmWithBob() {
  const state = createState(ALICE);
  applySync(state, joined("s1", { state: [member(ALICE, "join"), member(BOB, "join")], events: [], limited: true, prev: "t5" }), 0);
  return state;
}

describe("applySync", () => {
  it("builds rooms, members and the back-pagination token from the first sync", () => {
    const state = dmWithBob();
    const room = state.rooms[ROOM];
    expect(room.membership).toBe("join");
    expect(Object.keys(room.members).sort()).toEqual([ALICE, BOB]);
    expect(room.prevBatch).toBe("t5");
    expect(roomName(room, ALICE)).toBe("bob");
    expect(directPartner(room, ALICE)).toBe(BOB);
    expect(state.nextBatch).toBe("s1");
  });

  it("never shows an event twice, across overlapping syncs and pages", () => {
    const state = dmWithBob();
    const a = message("$a", BOB, "one");
    const b = message("$b", BOB, "two");
    applySync(state, joined("s2", { events: [a, b] }), 0);
    applySync(state, joined("s3", { events: [b] }), 0); // a resumed stream repeating itself
    applyMessages(state, ROOM, { chunk: [b, a], end: "t1" });
    expect(state.rooms[ROOM].timeline.map((i) => i.eventId)).toEqual(["$a", "$b"]);
  });

  it("reports arrivals from others, but not history from the first sync", () => {
    const state = createState(ALICE);
    const first = applySync(state, joined("s1", { state: [member(ALICE, "join"), member(BOB, "join")], events: [message("$old", BOB, "old")] }), 0);
    expect(first).toEqual([]);
    const next = applySync(state, joined("s2", { events: [message("$new", BOB, "new"), message("$mine", ALICE, "mine")] }), 0);
    expect(next.map((a) => a.event.eventId)).toEqual(["$new"]);
  });

  it("starts over after a limited timeline, keeping the new prev_batch", () => {
    const state = dmWithBob();
    applySync(state, joined("s2", { events: [message("$a", BOB, "a")] }), 0);
    applySync(state, joined("s3", { events: [message("$z", BOB, "z")], limited: true, prev: "t99" }), 0);
    const room = state.rooms[ROOM];
    expect(room.timeline.map((i) => i.eventId)).toEqual(["$z"]);
    expect(room.prevBatch).toBe("t99");
  });

  it("tracks typing without ourselves, and clears a typist who sends", () => {
    const state = dmWithBob();
    applySync(state, joined("s2", { ephemeral: [{ type: "m.typing", content: { user_ids: [ALICE, BOB] } }] }), 0);
    expect(state.rooms[ROOM].typing).toEqual([BOB]);
    applySync(state, joined("s3", { events: [message("$a", BOB, "hi")] }), 0);
    expect(state.rooms[ROOM].typing).toEqual([]);
    applySync(state, joined("s4", { ephemeral: [{ type: "m.typing", content: { user_ids: [BOB] } }] }), 0);
    applySync(state, joined("s5", { ephemeral: [{ type: "m.typing", content: { user_ids: [] } }] }), 0);
    expect(state.rooms[ROOM].typing).toEqual([]);
  });

  it("counts nothing unread once our read receipt is at the newest event", () => {
    const state = dmWithBob();
    applySync(state, joined("s2", { events: [message("$a", BOB, "hi")], unread: 1 }), 0);
    // A count that lags behind our own receipt in the same response.
    applySync(state, joined("s3", { ephemeral: [receipt("$a", "m.read", ALICE)], unread: 1 }), 0);
    expect(state.rooms[ROOM].unread).toBe(0);
    applySync(state, joined("s4", { events: [message("$b", BOB, "more")], unread: 1 }), 0);
    expect(state.rooms[ROOM].unread).toBe(1);
  });

  it("takes unread counts from unread_notifications", () => {
    const state = dmWithBob();
    applySync(state, joined("s2", { events: [message("$a", BOB, "hi")], unread: 3 }), 0);
    expect(state.rooms[ROOM].unread).toBe(3);
    applySync(state, joined("s3", { unread: 0 }), 0);
    expect(state.rooms[ROOM].unread).toBe(0);
  });

  it("records presence with last-active time on our clock", () => {
    const state = dmWithBob();
    applySync(
      state,
      {
        next_batch: "s2",
        presence: {
          events: [{ type: "m.presence", sender: BOB, content: { presence: "offline", last_active_ago: 60_000, currently_active: false } }],
        },
      },
      1_000_000,
    );
    expect(state.presence[BOB]).toEqual({ presence: "offline", lastActiveTs: 940_000, currentlyActive: false, statusMsg: undefined });
    applyPresence(state, BOB, { presence: "online", currently_active: true, last_active_ago: 0, status_msg: "lunch" }, 2_000_000);
    expect(state.presence[BOB]).toEqual({ presence: "online", lastActiveTs: 2_000_000, currentlyActive: true, statusMsg: "lunch" });
  });

  it("turns an invite into a joined room, and drops a room we left", () => {
    const state = createState(ALICE);
    applySync(
      state,
      {
        next_batch: "s1",
        rooms: {
          invite: {
            [ROOM]: {
              invite_state: {
                events: [
                  { type: "m.room.member", sender: BOB, state_key: BOB, content: { membership: "join", displayname: "Bob" } },
                  { type: "m.room.member", sender: BOB, state_key: ALICE, content: { membership: "invite", is_direct: true } },
                ],
              },
            },
          },
        },
      },
      0,
    );
    const invite = state.rooms[ROOM];
    expect(invite.membership).toBe("invite");
    expect(invite.inviter).toBe(BOB);
    expect(invite.isDirect).toBe(true);
    expect(roomName(invite, ALICE)).toBe("Bob");
    expect(sortedRooms(state)[0].roomId).toBe(ROOM);

    applySync(state, joined("s2", { events: [member(BOB, "join"), member(ALICE, "join")] }), 0);
    expect(state.rooms[ROOM].membership).toBe("join");
    expect(state.rooms[ROOM].isDirect).toBe(true);

    applySync(state, { next_batch: "s3", rooms: { leave: { [ROOM]: {} } } }, 0);
    expect(state.rooms[ROOM]).toBeUndefined();
  });

  it("names a room by m.room.name, else by its other members", () => {
    const state = dmWithBob();
    applySync(state, joined("s2", { events: [member(CAROL, "join")] }), 0);
    expect(roomName(state.rooms[ROOM], ALICE)).toBe("bob, carol");
    expect(directPartner(state.rooms[ROOM], ALICE)).toBeUndefined();
    applySync(
      state,
      joined("s3", { events: [{ event_id: "$n", type: "m.room.name", sender: ALICE, state_key: "", origin_server_ts: ts++, content: { name: "Lunch" } }] }),
      0,
    );
    expect(roomName(state.rooms[ROOM], ALICE)).toBe("Lunch");
  });
});

describe("local echoes", () => {
  it("shows a send at once and replaces it with the event, whichever comes first", () => {
    const state = dmWithBob();
    addEcho(state, ROOM, { txnId: "tx1", type: "m.room.message", ts: 1, content: { msgtype: "m.text", body: "hi" } });
    const room = state.rooms[ROOM];
    expect(visibleItems(room).map((i) => i.pending)).toEqual(["sending"]);
    expect(tickOf(room, room.echoes[0], ALICE)).toBe("sending");

    // The event arrives by sync (with our transaction id) before the PUT answers.
    applySync(state, joined("s2", { events: [message("$e1", ALICE, "hi", "tx1")] }), 0);
    expect(room.echoes).toEqual([]);
    confirmEcho(state, ROOM, "tx1", "$e1");
    expect(visibleItems(room).map((i) => i.eventId)).toEqual(["$e1"]);

    // The PUT answers first, then sync brings the event.
    addEcho(state, ROOM, { txnId: "tx2", type: "m.room.message", ts: 2, content: { msgtype: "m.text", body: "again" } });
    confirmEcho(state, ROOM, "tx2", "$e2");
    expect(tickOf(room, room.echoes[0], ALICE)).toBe("sent");
    applySync(state, joined("s3", { events: [message("$e2", ALICE, "again")] }), 0);
    expect(visibleItems(room).map((i) => i.eventId)).toEqual(["$e1", "$e2"]);
    expect(room.echoes).toEqual([]);
  });

  it("keeps echoes after the timeline and marks failures", () => {
    const state = dmWithBob();
    addEcho(state, ROOM, { txnId: "tx1", type: "m.room.message", ts: 1, content: { body: "x" } });
    applySync(state, joined("s2", { events: [message("$b", BOB, "meanwhile")] }), 0);
    const room = state.rooms[ROOM];
    expect(visibleItems(room).map((i) => i.eventId ?? i.txnId)).toEqual(["$b", "tx1"]);
    updateEcho(state, ROOM, "tx1", { pending: "failed" });
    expect(tickOf(room, room.echoes[0], ALICE)).toBe("failed");
    expect(lastMessage(room)?.txnId).toBe("tx1");
  });
});

describe("encrypted messages", () => {
  it("are the room's latest message, after any notice that follows them", () => {
    const state = dmWithBob();
    const encrypted: MatrixEvent = {
      event_id: "$enc",
      type: "m.room.encrypted",
      sender: BOB,
      origin_server_ts: ts++,
      content: { algorithm: "m.megolm.v1.aes-sha2", ciphertext: "AwgAEn..." },
    };
    applySync(state, joined("s2", { events: [message("$m", ALICE, "hi"), encrypted, member(CAROL, "invite")] }), 0);
    expect(lastMessage(state.rooms[ROOM])?.eventId).toBe("$enc");
  });
});

describe("ticks", () => {
  function withMessages() {
    const state = dmWithBob();
    applySync(state, joined("s2", { events: [message("$1", ALICE, "one"), message("$2", ALICE, "two"), message("$3", ALICE, "three")] }), 0);
    return state;
  }
  const tickList = (state: ReturnType<typeof withMessages>) => {
    const room = state.rooms[ROOM];
    return room.timeline.map((item) => tickOf(room, item, ALICE));
  };

  it("goes sent, delivered, read; a receipt covers the events before it", () => {
    const state = withMessages();
    expect(tickList(state)).toEqual(["sent", "sent", "sent"]);
    applySync(state, joined("s3", { ephemeral: [receipt("$2", "tern.delivered", BOB)] }), 0);
    expect(tickList(state)).toEqual(["delivered", "delivered", "sent"]);
    applySync(state, joined("s4", { ephemeral: [receipt("$1", "m.read", BOB)] }), 0);
    expect(tickList(state)).toEqual(["read", "delivered", "sent"]);
    // Read implies delivered.
    applySync(state, joined("s5", { ephemeral: [receipt("$3", "m.read", BOB)] }), 0);
    expect(tickList(state)).toEqual(["read", "read", "read"]);
  });

  it("never moves a receipt backwards", () => {
    const state = withMessages();
    applySync(state, joined("s3", { ephemeral: [receipt("$3", "m.read", BOB, 10)] }), 0);
    applySync(state, joined("s4", { ephemeral: [receipt("$1", "m.read", BOB, 20)] }), 0);
    expect(state.rooms[ROOM].receipts[BOB].read?.eventId).toBe("$3");
  });

  it("in a group, needs every other member", () => {
    const state = withMessages();
    applySync(state, joined("s3", { events: [member(CAROL, "join"), message("$4", ALICE, "four")] }), 0);
    applySync(state, joined("s4", { ephemeral: [receipt("$4", "m.read", BOB)] }), 0);
    const room = state.rooms[ROOM];
    const four = room.timeline[room.timeline.length - 1];
    expect(tickOf(room, four, ALICE)).toBe("sent");
    applySync(state, joined("s5", { ephemeral: [receipt("$4", "tern.delivered", CAROL)] }), 0);
    expect(tickOf(room, four, ALICE)).toBe("delivered");
    applySync(state, joined("s6", { ephemeral: [receipt("$4", "m.read", CAROL)] }), 0);
    expect(tickOf(room, four, ALICE)).toBe("read");
  });
});

describe("read receipts we send", () => {
  it("asks for one when others wrote after our receipt, and not again", () => {
    const state = dmWithBob();
    applySync(state, joined("s2", { events: [message("$a", BOB, "hi"), message("$b", ALICE, "yo")], unread: 1 }), 0);
    const room = state.rooms[ROOM];
    expect(pendingReadReceipt(room, ALICE)).toBe("$b");
    markRead(state, ROOM, "$b", 0);
    expect(room.unread).toBe(0);
    expect(pendingReadReceipt(room, ALICE)).toBeUndefined();
    applySync(state, joined("s3", { events: [message("$c", ALICE, "more")] }), 0);
    expect(pendingReadReceipt(room, ALICE)).toBeUndefined();
    applySync(state, joined("s4", { events: [message("$d", BOB, "back")], unread: 1 }), 0);
    expect(pendingReadReceipt(room, ALICE)).toBe("$d");
  });
});

describe("applyMessages", () => {
  it("prepends older events in order and stops at the start of the room", () => {
    const state = dmWithBob();
    applySync(state, joined("s2", { events: [message("$3", BOB, "3")] }), 0);
    applyMessages(state, ROOM, { chunk: [message("$2", BOB, "2"), message("$1", BOB, "1")], end: "t1" });
    const room = state.rooms[ROOM];
    expect(room.timeline.map((i) => i.eventId)).toEqual(["$1", "$2", "$3"]);
    expect(room.prevBatch).toBe("t1");
    applyMessages(state, ROOM, { chunk: [] });
    expect(room.prevBatch).toBeNull();
  });
});
