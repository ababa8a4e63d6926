// Interop: matrix-js-sdk's threads, edits and user directory against Tern.
//
// An unmodified matrix-js-sdk, started as Element Web starts it with threads
// on (`threadSupport: true`), starts threads and replies in them, edits a
// message and looks people up in the user directory. What is checked is what
// a user sees: a *fresh* login's thread list, reply counts and bodies, and an
// edited message's body, all of which then come from the server (the thread
// list API, bundled aggregations), never from the sending client's local echo.

import assert from "node:assert/strict";
import fs from "node:fs";
import { after, before, describe, test } from "node:test";

import {
    TernServer,
    captureSdkLogs,
    createSharedRoom,
    loginClient,
    sdk,
    stopClient,
    waitFor,
    waitForEvent,
} from "./lib/harness.js";

// As Element Web starts the SDK: threads on, timelines that can be opened at
// any event (permalinks, a thread opened at a reply).
const THREADED = { clientOpts: { timelineSupport: true }, startOpts: { threadSupport: true } };
// A fresh login whose initial sync holds only the room's last two events:
// anything older it knows comes from the server's other APIs.
const FRESH = { ...THREADED, startOpts: { ...THREADED.startOpts, initialSyncLimit: 2 } };

let server;
let sdkLog;
let failed = false;

// Clients a test started; stopped when it ends, passed or failed.
async function withClients(body) {
    const clients = [];
    const track = (c) => {
        clients.push(c.client);
        return c;
    };
    try {
        await body(track);
    } catch (e) {
        failed = true;
        e.message += `\n--- ${server.describe()}\n--- SDK log: ${sdkLog}`;
        throw e;
    } finally {
        for (const c of clients) stopClient(c);
    }
}

/** Sends `count` plain messages to the main timeline; returns their ids. */
async function chatter(who, roomId, count, label) {
    const ids = [];
    for (let i = 1; i <= count; i++) {
        const { event_id: id } = await who.client.sendTextMessage(roomId, `${label} ${i}`);
        ids.push(id);
    }
    return ids;
}

const ids = (events) => events.map((e) => e.getId());
const bodies = (events) => events.map((e) => e.getContent().body);

/**
 * A fresh client's thread list, as Element's thread panel loads it: the two
 * timeline sets (all threads, my threads) filled with one page of
 * GET /_matrix/client/v1/rooms/{roomId}/threads each.
 */
async function loadThreadList(who, roomId) {
    const room = who.client.getRoom(roomId);
    assert.ok(room, `${who.userId} knows room ${roomId}`);
    const sets = await room.createThreadsTimelineSets();
    assert.ok(sets, "the SDK made thread list timeline sets (server-side thread support found in /versions)");
    await room.fetchRoomThreads();
    const [all, mine] = room.threadsTimelineSets;
    assert.equal(all.threadListType, sdk.ThreadFilterType.All);
    assert.equal(mine.threadListType, sdk.ThreadFilterType.My);
    return { room, all: all.getLiveTimeline().getEvents(), mine: mine.getLiveTimeline().getEvents() };
}

/**
 * Waits until `who`'s Thread for `rootId` has loaded its events (the SDK
 * pages them in through /relations when it makes the Thread) and counts
 * `replyCount` replies; returns the Thread.
 */
async function waitForThread(who, roomId, rootId, replyCount, eventCount = replyCount + 1) {
    let last = "no Thread object";
    try {
        return await waitFor(`${who.userId} (${who.deviceId}) to load thread ${rootId} with ${replyCount} replies`, () => {
            const thread = who.client.getRoom(roomId)?.getThread(rootId);
            if (!thread) return false;
            last =
                `length ${thread.length}, initialEventsFetched ${thread.initialEventsFetched}, ` +
                `events ${JSON.stringify(bodies(thread.events))}`;
            return thread.initialEventsFetched && thread.length === replyCount && thread.events.length === eventCount
                ? thread
                : false;
        });
    } catch (e) {
        e.message += ` (last seen: ${last})`;
        throw e;
    }
}

// ---------- the suite

describe("matrix-js-sdk threads, edits and user directory against Tern", () => {
    before(async () => {
        server = await TernServer.start();
        sdkLog = captureSdkLogs(server.workdir);
    });
    after(async () => {
        if (!server) return;
        await server.stop();
        // The data directory and the logs are kept when a test failed, or on request.
        if (!failed && !process.env.TERN_KEEP_LOGS) fs.rmSync(server.workdir, { recursive: true, force: true });
    });

    test("threads started and replied to are listed, with their replies and counts, for every member", () =>
        withClients(async (track) => {
            for (const name of ["theo", "rhea", "cleo"]) await server.register(name);
            const theo = track(await loginClient(server, "theo", THREADED));
            const rhea = track(await loginClient(server, "rhea", THREADED));
            const cleo = track(await loginClient(server, "cleo", THREADED));
            const roomId = await createSharedRoom(theo, [rhea, cleo], { name: "lunch" });

            // Two thread roots: theo's (the busy thread) and rhea's.
            const lunch = "Where shall we have lunch on Friday?";
            const { event_id: root1 } = await theo.client.sendTextMessage(roomId, lunch);
            const parking = "Anyone know where to park?";
            const { event_id: root2 } = await rhea.client.sendTextMessage(roomId, parking);
            for (const who of [theo, rhea, cleo]) await waitForEvent(who, roomId, root2);

            // cleo answers rhea's message in a thread, then theo's thread gets
            // three replies: the newest activity is in theo's thread.
            const { event_id: parkReply } = await cleo.client.sendTextMessage(roomId, root2, "Level 2 of the garage");
            await waitForEvent(rhea, roomId, parkReply);
            const lunchReplies = [
                [rhea, "The noodle bar?"],
                [theo, "Fine by me, 12:30?"],
                [rhea, "12:30 it is"],
            ];
            const replyIds = [];
            for (const [who, body] of lunchReplies) {
                const { event_id: id } = await who.client.sendTextMessage(roomId, root1, body);
                replyIds.push(id);
                // Each reply reaches the other side before the next is sent, as in a conversation.
                await waitForEvent(who === theo ? rhea : theo, roomId, id);
            }

            // On theo's running client the replies live in the thread, not in
            // the main timeline. (Their order there is not checked: replies
            // that arrive by /sync while the SDK is still paging the new
            // thread's start in through /relations can be placed out of order,
            // a race the SDK documents in Thread.updateThreadMetadata. The
            // fresh logins below check the order.)
            const liveThread = await waitForThread(theo, roomId, root1, 3);
            assert.deepEqual(ids(liveThread.events).sort(), [root1, ...replyIds].sort());
            assert.equal(liveThread.events[0].getId(), root1, "the root first");
            const rheaReply = theo.client.getRoom(roomId).findEventById(replyIds[0]);
            assert.equal(rheaReply.threadRootId, root1);
            assert.equal(rheaReply.getSender(), rhea.userId);
            assert.ok(
                !ids(theo.client.getRoom(roomId).getLiveTimeline().getEvents()).includes(replyIds[0]),
                "a thread reply is not in the main timeline",
            );

            // Later chatter in the main timeline pushes the threads out of a
            // fresh login's initial sync (the last two events only).
            await chatter(theo, roomId, 3, "unrelated");
            for (const c of [theo, rhea, cleo]) stopClient(c.client);

            const expected = {
                // theo wrote root1; rhea wrote root2 and replied in root1; cleo replied in root2.
                [theo.userId]: { mine: [root1], participated: { [root1]: true, [root2]: false } },
                [rhea.userId]: { mine: [root2, root1], participated: { [root1]: true, [root2]: true } },
                [cleo.userId]: { mine: [root2], participated: { [root1]: false, [root2]: true } },
            };
            for (const name of ["theo", "rhea", "cleo"]) {
                const fresh = track(await loginClient(server, name, { ...FRESH, deviceName: `${name} fresh` }));
                const want = expected[fresh.userId];
                const room = fresh.client.getRoom(roomId);
                assert.deepEqual(room.getThreads(), [], `${name}: no thread known from the initial sync`);
                assert.equal(room.findEventById(root1), undefined, `${name}: root not in the initial sync`);

                // The thread list from the server: both threads, the most
                // recently active last (as the SDK orders its timelines), and
                // "my threads" as each user took part.
                const list = await loadThreadList(fresh, roomId);
                assert.deepEqual(ids(list.all), [root2, root1], `${name}: all threads`);
                assert.deepEqual(bodies(list.all), [parking, lunch]);
                assert.deepEqual(ids(list.mine), want.mine, `${name}: my threads`);

                // The same list as the server sends it: most recently active
                // first, each root with its thread's summary for this user.
                const raw = await server.ok("GET", `/_matrix/client/v1/rooms/${encodeURIComponent(roomId)}/threads`, {
                    token: fresh.client.getAccessToken(),
                });
                assert.deepEqual(raw.chunk.map((e) => e.event_id), [root1, root2], JSON.stringify(raw));
                const summaries = raw.chunk.map((e) => {
                    const t = e.unsigned?.["m.relations"]?.["m.thread"];
                    return t && [t.count, t.latest_event?.event_id, t.current_user_participated];
                });
                assert.deepEqual(summaries, [
                    [3, replyIds[2], want.participated[root1]],
                    [1, parkReply, want.participated[root2]],
                ], `${name}: bundled m.thread summaries in /threads`);

                // The roots' Thread objects, made from the listed roots: the
                // reply count and latest reply bundled by the server, then the
                // replies loaded through /relations.
                const thread = await waitForThread(fresh, roomId, root1, 3);
                assert.equal(thread.rootEvent.getId(), root1);
                assert.equal(thread.rootEvent.isThreadRoot, true);
                const summary = thread.rootEvent.getServerAggregatedRelation(sdk.THREAD_RELATION_TYPE.name);
                assert.equal(summary?.count, 3, `m.thread summary of ${root1}: ${JSON.stringify(summary)}`);
                assert.equal(summary.latest_event.event_id, replyIds[2]);
                assert.equal(thread.replyToEvent.getId(), replyIds[2]);
                assert.equal(thread.replyToEvent.getContent().body, "12:30 it is");
                assert.deepEqual(ids(thread.events), [root1, ...replyIds], `${name}: thread events`);
                assert.deepEqual(bodies(thread.events), [lunch, ...lunchReplies.map(([, b]) => b)]);
                assert.deepEqual(
                    thread.events.map((e) => e.getSender()),
                    [theo.userId, rhea.userId, theo.userId, rhea.userId],
                );
                assert.equal(thread.hasCurrentUserParticipated, want.participated[root1], `${name}: participated in ${root1}`);
                assert.equal(room.findEventById(root1)?.getThread(), thread, "the root event's Thread");

                const other = await waitForThread(fresh, roomId, root2, 1);
                assert.deepEqual(ids(other.events), [root2, parkReply]);
                assert.equal(other.replyToEvent.getSender(), cleo.userId);
                assert.equal(other.hasCurrentUserParticipated, want.participated[root2], `${name}: participated in ${root2}`);

                // Opening the thread at its first reply (a permalink into a
                // thread): /context for the reply, /relations either side of it.
                const timeline = await fresh.client.getThreadTimeline(thread.timelineSet, replyIds[0]);
                assert.ok(timeline, "a thread timeline for the reply");
                assert.deepEqual(ids(timeline.getEvents()), [root1, ...replyIds], `${name}: thread timeline at a reply`);
                stopClient(fresh.client);
            }
        }));

    test("an edit by the sender shows as the message's content for a fresh login", () =>
        withClients(async (track) => {
            await server.register("edna");
            await server.register("fred");
            const edna = track(await loginClient(server, "edna", THREADED));
            const fred = track(await loginClient(server, "fred", THREADED));
            const roomId = await createSharedRoom(edna, [fred], { name: "meeting point" });

            const original = "Meet at the station at 9";
            const edited = "Meet at the station at 10";
            const { event_id: originalId } = await edna.client.sendTextMessage(roomId, original);
            // More than /context's default window (10 events) between the
            // message and its edit: a client opening the message there sees
            // the edit only through the bundled aggregation.
            await chatter(fred, roomId, 12, "meanwhile");
            const { event_id: editId } = await edna.client.sendMessage(roomId, {
                msgtype: "m.text",
                body: `* ${edited}`,
                "m.new_content": { msgtype: "m.text", body: edited },
                "m.relates_to": { rel_type: sdk.RelationType.Replace, event_id: originalId },
            });
            // Someone else's "edit" of edna's message, newer than hers: not an edit.
            const { event_id: hijackId } = await fred.client.sendMessage(roomId, {
                msgtype: "m.text",
                body: "* Meet at the pub",
                "m.new_content": { msgtype: "m.text", body: "Meet at the pub" },
                "m.relates_to": { rel_type: sdk.RelationType.Replace, event_id: originalId },
            });
            await chatter(fred, roomId, 3, "later");

            // The sender's own client shows the edit (its live timeline).
            await waitFor("edna's timeline to show the edit", () => {
                const ev = edna.client.getRoom(roomId)?.findEventById(originalId);
                return ev?.replacingEventId() === editId && ev.getContent().body === edited;
            });

            // The server bundles the sender's newest edit with the message.
            const raw = await fred.client.fetchRoomEvent(roomId, originalId);
            const bundled = raw.unsigned?.["m.relations"]?.[sdk.RelationType.Replace];
            assert.ok(bundled, `unsigned.m.relations.m.replace on ${originalId}: ${JSON.stringify(raw.unsigned)}`);
            assert.equal(bundled.event_id, editId, `the bundled edit is edna's, not ${hijackId}: ${JSON.stringify(bundled)}`);
            assert.equal(bundled.sender, edna.userId);
            assert.equal(bundled.content?.["m.new_content"]?.body, edited);
            assert.equal(raw.content.body, original, "the event's own content is left as sent");
            for (const c of [edna, fred]) stopClient(c.client);

            // A fresh login of fred opens the message where it is (a permalink,
            // /context): the edit itself is outside the window, so what the SDK
            // shows comes from the bundle.
            const freshFred = track(await loginClient(server, "fred", { ...FRESH, deviceName: "fred fresh" }));
            const room = freshFred.client.getRoom(roomId);
            assert.equal(room.findEventById(originalId), undefined, "the message is not in the initial sync");
            const timeline = await freshFred.client.getEventTimeline(room.getUnfilteredTimelineSet(), originalId);
            const opened = timeline?.getEvents().find((e) => e.getId() === originalId);
            assert.ok(opened, `${originalId} in the timeline opened at it`);
            assert.equal(room.findEventById(editId), undefined, "the edit event itself is not loaded");
            assert.equal(opened.replacingEventId(), editId);
            assert.equal(opened.replacingEvent()?.getSender(), edna.userId);
            assert.equal(opened.getContent().body, edited);
            assert.equal(opened.getOriginalContent().body, original);
            stopClient(freshFred.client);

            // A fresh login of edna scrolls back through the room to the message.
            const freshEdna = track(await loginClient(server, "edna", { ...FRESH, deviceName: "edna fresh" }));
            const ednaRoom = freshEdna.client.getRoom(roomId);
            const live = ednaRoom.getLiveTimeline();
            for (let pages = 0; !ednaRoom.findEventById(originalId); pages++) {
                assert.ok(pages < 10, `${originalId} reached by scrolling back within 10 pages`);
                const more = await freshEdna.client.paginateEventTimeline(live, { backwards: true, limit: 10 });
                assert.ok(more || ednaRoom.findEventById(originalId), "the room's start reached without the message");
            }
            const scrolled = ednaRoom.findEventById(originalId);
            assert.equal(scrolled.replacingEventId(), editId);
            assert.equal(scrolled.getContent().body, edited);
            assert.equal(scrolled.getOriginalContent().body, original);
        }));

    test("the user directory finds people who share a room or a public room, and nobody else", () =>
        withClients(async (track) => {
            // The same display name word for all three; only where they are differs.
            const people = {
                seeker: "Sam Seeker",
                quillon: "Margo Lunchbox", // shares a private room with seeker
                quillpublic: "Margo Public", // in a public room seeker is not in
                quillhermit: "Margo Hermit", // in no room at all
            };
            const c = {};
            for (const [name, displayName] of Object.entries(people)) {
                await server.register(name);
                c[name] = track(await loginClient(server, name));
                await c[name].client.setDisplayName(displayName);
            }
            const { seeker, quillon, quillpublic, quillhermit } = c;
            const shared = await createSharedRoom(seeker, [quillon], { name: "seekers" });
            const { room_id: publicRoom } = await quillpublic.client.createRoom({ preset: "public_chat", name: "open" });
            await waitFor("quillpublic to be in the public room", () =>
                quillpublic.client.getRoom(publicRoom)?.getMyMembership() === "join",
            );

            const search = async (term) => {
                const res = await seeker.client.searchUserDirectory({ term });
                assert.equal(typeof res.limited, "boolean", `limited in ${JSON.stringify(res)}`);
                return res.results;
            };
            const userIds = (results) => results.map((r) => r.user_id).sort();

            // By display name, any case: the co-member and the public room's
            // member, not the one in no room.
            let results = await search("margo");
            assert.deepEqual(userIds(results), [quillon.userId, quillpublic.userId].sort(), JSON.stringify(results));
            assert.equal(results.find((r) => r.user_id === quillon.userId).display_name, "Margo Lunchbox");
            results = await search("Lunchbox");
            assert.deepEqual(userIds(results), [quillon.userId], JSON.stringify(results));
            // By a part of the user id, and by the whole of it.
            results = await search("quill");
            assert.deepEqual(userIds(results), [quillon.userId, quillpublic.userId].sort(), JSON.stringify(results));
            assert.deepEqual(userIds(await search("uillo")), [quillon.userId]);
            assert.deepEqual(userIds(await search(quillon.userId)), [quillon.userId]);
            // The user in no room, by name or id: nothing.
            assert.deepEqual(await search("hermit"), []);
            assert.deepEqual(await search(quillhermit.userId), []);

            // Once the hermit joins the public room, they can be found: it was
            // where they were, not their name, that kept them out.
            await quillhermit.client.joinRoom(publicRoom);
            await waitFor("the hermit, now in a public room, in the directory", async () => {
                const found = await search("hermit");
                return found.length === 1 && found[0].user_id === quillhermit.userId && found[0].display_name === "Margo Hermit";
            });

            // And once the co-member leaves the only room they share, they
            // cannot be found any more.
            await quillon.client.leave(shared);
            await waitFor("seeker to see quillon leave", () =>
                seeker.client.getRoom(shared)?.getMember(quillon.userId)?.membership === "leave",
            );
            await waitFor("quillon, who left, gone from the directory", async () =>
                (await search("Lunchbox")).length === 0,
            );
            assert.deepEqual(userIds(await search("quill")), [quillhermit.userId, quillpublic.userId].sort());
        }));
});
