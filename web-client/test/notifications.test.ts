import { describe, expect, it } from "vitest";

import { applySync, createState, type MatrixEvent, type SyncResponse } from "../src/store";
import { notificationText } from "../src/ui/notifications";

const ALICE = "@alice:hs";
const BOB = "@bob:hs";
const CAROL = "@carol:hs";
const ROOM = "!room:hs";

let ts = 1000;
function member(userId: string, displayname?: string): MatrixEvent {
  return {
    event_id: `$m-${userId}-${ts}`,
    type: "m.room.member",
    sender: userId,
    state_key: userId,
    origin_server_ts: ts++,
    content: { membership: "join", ...(displayname ? { displayname } : {}) },
  };
}
function roomWith(state: MatrixEvent[]) {
  const client = createState(ALICE);
  const sync: SyncResponse = { next_batch: "s1", rooms: { join: { [ROOM]: { state: { events: state }, timeline: { events: [] } } } } };
  applySync(client, sync, 0);
  return client.rooms[ROOM];
}
function message(sender: string, content: Record<string, unknown>) {
  return { eventId: `$e${ts}`, type: "m.room.message", sender, ts: ts++, content };
}

describe("notificationText", () => {
  it("is titled with the sender alone in a one-on-one chat", () => {
    const room = roomWith([member(ALICE), member(BOB, "Bob")]);
    expect(notificationText(room, message(BOB, { msgtype: "m.text", body: "Ping" }), ALICE)).toEqual({ title: "Bob", body: "Ping" });
  });

  it("names the chat too in a group", () => {
    const room = roomWith([
      member(ALICE),
      member(BOB),
      member(CAROL),
      { event_id: "$name", type: "m.room.name", sender: ALICE, state_key: "", origin_server_ts: ts++, content: { name: "Lunch club" } },
    ]);
    expect(notificationText(room, message(CAROL, { msgtype: "m.image", body: "menu.png" }), ALICE)).toEqual({
      title: "carol in Lunch club",
      body: "Photo: menu.png",
    });
  });
});
