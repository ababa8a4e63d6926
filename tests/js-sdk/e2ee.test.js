// Interop: matrix-js-sdk with its Rust crypto (WASM) in Node against Tern.
//
// An unmodified matrix-js-sdk logs in as Element Web does, bootstraps
// cross-signing with password user-interactive auth, sends and receives in
// an encrypted room, and backs a room key up and restores it on a new device.
// Every check is one a user would make: message bodies decrypted, keys present.

import assert from "node:assert/strict";
import crypto from "node:crypto";
import fs from "node:fs";
import { after, before, describe, test } from "node:test";

import { TernServer, captureSdkLogs, loginClient, passwordAuth, sdk, stopClient, waitFor } from "./lib/harness.js";

const DEADLINE_MS = 20_000;
const ENCRYPTION_STATE = {
    type: "m.room.encryption",
    state_key: "",
    content: { algorithm: "m.megolm.v1.aes-sha2" },
};

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

// ---------- canonical JSON and ed25519, to check signatures as a client does

function canonicalJson(value) {
    if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
    if (value && typeof value === "object") {
        const keys = Object.keys(value).sort();
        return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
    }
    return JSON.stringify(value);
}

const unpadded = (buf) => buf.toString("base64").replace(/=+$/, "");
const fromUnpadded = (s) => Buffer.from(s, "base64");

function ed25519PublicKey(b64) {
    return crypto.createPublicKey({
        key: { kty: "OKP", crv: "Ed25519", x: fromUnpadded(b64).toString("base64url") },
        format: "jwk",
    });
}

/**
 * Whether `object` carries a valid signature by `signer`'s ed25519 key `keyB64`,
 * named `ed25519:<keyName>` (a device's id, or a cross-signing key's own public key).
 */
function signedBy(object, signer, keyB64, keyName = keyB64) {
    const sig = object.signatures?.[signer]?.[`ed25519:${keyName}`];
    if (!sig) return false;
    const { signatures, unsigned, ...rest } = object;
    return crypto.verify(null, Buffer.from(canonicalJson(rest)), ed25519PublicKey(keyB64), fromUnpadded(sig));
}

function newSigningKey() {
    const { publicKey, privateKey } = crypto.generateKeyPairSync("ed25519");
    const pub = unpadded(Buffer.from(publicKey.export({ format: "jwk" }).x, "base64url"));
    return { pub, privateKey };
}

function crossSigningKey(userId, usage, key, signer) {
    const obj = { user_id: userId, usage: [usage], keys: { [`ed25519:${key.pub}`]: key.pub } };
    if (signer) {
        const sig = crypto.sign(null, Buffer.from(canonicalJson(obj)), signer.privateKey);
        obj.signatures = { [userId]: { [`ed25519:${signer.pub}`]: unpadded(sig) } };
    }
    return obj;
}

const onlyKey = (crossSigningKeyObj) => Object.values(crossSigningKeyObj.keys)[0];

async function queryKeys(token, queried) {
    return server.ok("POST", "/_matrix/client/v3/keys/query", {
        token,
        body: { device_keys: Object.fromEntries(queried.map((u) => [u, []])) },
    });
}

// ---------- rooms and messages

async function createEncryptedRoom(alice, invite = []) {
    const { room_id: roomId } = await alice.client.createRoom({
        name: "secret room",
        preset: "private_chat",
        invite,
        initial_state: [ENCRYPTION_STATE],
    });
    await waitFor(`${alice.userId} to see ${roomId} as encrypted`, () =>
        alice.client.getRoom(roomId)?.hasEncryptionStateEvent(),
    );
    return roomId;
}

/** Waits until `who`'s timeline holds `eventId` decrypted to an m.text with `body`. */
async function waitForDecrypted(who, roomId, eventId, body) {
    let last = "not in the timeline";
    try {
        return await waitFor(
            `${who.userId} (${who.deviceId}) to decrypt ${eventId} to ${JSON.stringify(body)}`,
            () => {
                const ev = who.client.getRoom(roomId)?.findEventById(eventId);
                if (!ev) return false;
                if (ev.isBeingDecrypted() || ev.shouldAttemptDecryption()) {
                    last = "being decrypted";
                    return false;
                }
                if (ev.isDecryptionFailure()) {
                    last = `decryption failure: ${ev.decryptionFailureReason}`;
                    return false;
                }
                last = `type ${ev.getType()}, content ${JSON.stringify(ev.getContent())}`;
                return ev.isEncrypted() && ev.getType() === "m.room.message" && ev.getContent().body === body
                    ? ev
                    : false;
            },
            DEADLINE_MS,
        );
    } catch (e) {
        failed = true;
        e.message += ` (last seen: ${last})`;
        throw e;
    }
}

/** The event as the server stores it: encrypted, with no plaintext. */
async function assertStoredEncrypted(who, roomId, eventId, body) {
    const raw = await server.ok(
        "GET",
        `/_matrix/client/v3/rooms/${encodeURIComponent(roomId)}/event/${encodeURIComponent(eventId)}`,
        { token: who.client.getAccessToken() },
    );
    assert.equal(raw.type, "m.room.encrypted", JSON.stringify(raw));
    assert.equal(raw.content.algorithm, "m.megolm.v1.aes-sha2", JSON.stringify(raw));
    assert.ok(!JSON.stringify(raw).includes(body), `plaintext on the server: ${JSON.stringify(raw)}`);
    return raw;
}

// ---------- the suite

describe("matrix-js-sdk (Rust crypto, WASM) against Tern", () => {
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

    test("logs in as Element Web does, uploads device keys and reaches a synced state", () =>
        withClients(async (track) => {
            await server.register("ellie");
            const ellie = track(await loginClient(server, "ellie"));
            assert.ok(ellie.states.includes(sdk.SyncState.Prepared), `sync states: ${ellie.states}`);
            assert.ok(ellie.states.includes(sdk.SyncState.Syncing), `sync states: ${ellie.states}`);

            // The Rust crypto uploads the device's identity keys and one-time
            // keys; /keys/query returns the same identity keys the SDK holds.
            const own = await ellie.crypto.getOwnDeviceKeys();
            const token = ellie.client.getAccessToken();
            const device = await waitFor("ellie's device keys on the server", async () => {
                const resp = await queryKeys(token, [ellie.userId]);
                return resp.device_keys?.[ellie.userId]?.[ellie.deviceId];
            });
            assert.equal(device.keys[`ed25519:${ellie.deviceId}`], own.ed25519);
            assert.equal(device.keys[`curve25519:${ellie.deviceId}`], own.curve25519);
            assert.ok(signedBy(device, ellie.userId, own.ed25519, ellie.deviceId), "device keys self-signed");
            assert.equal(device.unsigned?.device_display_name, "js-sdk interop");
            await waitFor("one-time keys counted in /sync", async () => {
                const sync = await server.ok("GET", "/_matrix/client/v3/sync?timeout=0", { token });
                return sync.device_one_time_keys_count?.signed_curve25519 > 0;
            });
            // The SDK knows its own device through the server's device list.
            const devices = await ellie.crypto.getUserDeviceInfo([ellie.userId], true);
            assert.ok(devices.get(ellie.userId)?.has(ellie.deviceId), "own device in getUserDeviceInfo");
        }));

    test("bootstraps cross-signing with password UIA; replacing the keys needs auth", () =>
        withClients(async (track) => {
            await server.register("crossie");
            const me = track(await loginClient(server, "crossie"));
            assert.equal(await me.crypto.isCrossSigningReady(), false, "not ready before bootstrap");
            const token = me.client.getAccessToken();
            const { next_batch: since } = await server.ok("GET", "/_matrix/client/v3/sync?timeout=0", { token });

            let authCalls = 0;
            const auth = passwordAuth(me.userId);
            await me.crypto.bootstrapCrossSigning({
                setupNewCrossSigning: true,
                authUploadDeviceSigningKeys: async (makeRequest) => {
                    authCalls += 1;
                    await auth(makeRequest);
                },
            });
            assert.equal(authCalls, 1);

            // What the SDK says.
            const status = await me.crypto.getCrossSigningStatus();
            assert.deepEqual(status.privateKeysCachedLocally, {
                masterKey: true,
                selfSigningKey: true,
                userSigningKey: true,
            });
            assert.equal(status.publicKeysOnDevice, true);
            assert.equal(await me.crypto.isCrossSigningReady(), true);
            // The device's signature by the self-signing key reaches the SDK's
            // view of its own device by a /keys/query after the upload (the
            // server lists the user in device_lists.changed): the SDK's own
            // query may have raced the signature upload, so wait for it.
            await waitFor("the SDK to see its own device cross-signed", async () => {
                const deviceStatus = await me.crypto.getDeviceVerificationStatus(me.userId, me.deviceId);
                return deviceStatus?.crossSigningVerified;
            });
            const changes = await server.ok("GET", `/_matrix/client/v3/sync?timeout=0&since=${since}`, { token });
            assert.ok(
                changes.device_lists?.changed?.includes(me.userId),
                `own user in device_lists.changed after the upload: ${JSON.stringify(changes.device_lists)}`,
            );
            const masterId = await me.crypto.getCrossSigningKeyId("master");
            const sskId = await me.crypto.getCrossSigningKeyId("self_signing");
            assert.ok(masterId && sskId);

            // What the server stores: the same keys, the self-signing key
            // signed by the master key, the device signed by the self-signing
            // key and the master key by the device (/keys/signatures/upload).
            const q = await queryKeys(token, [me.userId]);
            const master = q.master_keys?.[me.userId];
            const ssk = q.self_signing_keys?.[me.userId];
            const usk = q.user_signing_keys?.[me.userId];
            assert.ok(master && ssk && usk, `cross-signing keys in /keys/query: ${JSON.stringify(q)}`);
            assert.equal(onlyKey(master), masterId);
            assert.equal(onlyKey(ssk), sskId);
            assert.deepEqual(master.usage, ["master"]);
            assert.deepEqual(ssk.usage, ["self_signing"]);
            assert.ok(signedBy(ssk, me.userId, masterId), `self-signing key signed by master: ${JSON.stringify(ssk)}`);
            assert.ok(signedBy(usk, me.userId, masterId), `user-signing key signed by master: ${JSON.stringify(usk)}`);
            const device = q.device_keys[me.userId][me.deviceId];
            assert.ok(signedBy(device, me.userId, sskId), `device signed by self-signing key: ${JSON.stringify(device)}`);
            const own = await me.crypto.getOwnDeviceKeys();
            assert.ok(signedBy(master, me.userId, own.ed25519, me.deviceId), `master signed by device: ${JSON.stringify(master)}`);

            // Replacing the keys without auth: 401 with a password flow, and
            // the stored keys stay as they were.
            const newMaster = newSigningKey();
            const replacement = {
                master_key: crossSigningKey(me.userId, "master", newMaster),
                self_signing_key: crossSigningKey(me.userId, "self_signing", newSigningKey(), newMaster),
                user_signing_key: crossSigningKey(me.userId, "user_signing", newSigningKey(), newMaster),
            };
            const refused = await server.request("POST", "/_matrix/client/v3/keys/device_signing/upload", {
                token,
                body: replacement,
            });
            assert.equal(refused.status, 401, JSON.stringify(refused.body));
            assert.ok(
                refused.body.flows?.some((f) => f.stages?.length === 1 && f.stages[0] === "m.login.password"),
                `flows: ${JSON.stringify(refused.body)}`,
            );
            assert.ok(refused.body.session, `a UIA session: ${JSON.stringify(refused.body)}`);
            const after1 = await queryKeys(token, [me.userId]);
            assert.equal(onlyKey(after1.master_keys[me.userId]), masterId, "master key unchanged after 401");

            // A wrong password is refused as well.
            const wrong = await server.request("POST", "/_matrix/client/v3/keys/device_signing/upload", {
                token,
                body: {
                    ...replacement,
                    auth: {
                        type: "m.login.password",
                        identifier: { type: "m.id.user", user: me.userId },
                        password: "not the password",
                        session: refused.body.session,
                    },
                },
            });
            assert.equal(wrong.status, 401, JSON.stringify(wrong.body));
            assert.equal(wrong.body.errcode, "M_FORBIDDEN", JSON.stringify(wrong.body));

            // The SDK resetting the keys with the password succeeds: new keys,
            // the device re-signed by the new self-signing key.
            await me.crypto.bootstrapCrossSigning({ setupNewCrossSigning: true, authUploadDeviceSigningKeys: auth });
            const newMasterId = await me.crypto.getCrossSigningKeyId("master");
            const newSskId = await me.crypto.getCrossSigningKeyId("self_signing");
            assert.notEqual(newMasterId, masterId);
            assert.equal(await me.crypto.isCrossSigningReady(), true);
            const after2 = await queryKeys(token, [me.userId]);
            assert.equal(onlyKey(after2.master_keys[me.userId]), newMasterId);
            assert.equal(onlyKey(after2.self_signing_keys[me.userId]), newSskId);
            assert.ok(signedBy(after2.device_keys[me.userId][me.deviceId], me.userId, newSskId), "device re-signed");
        }));

    test("alice and bob exchange messages in an encrypted room", () =>
        withClients(async (track) => {
            await server.register("alice");
            await server.register("bob");
            const alice = track(await loginClient(server, "alice"));
            const bob = track(await loginClient(server, "bob"));

            const roomId = await createEncryptedRoom(alice, [bob.userId]);
            await waitFor("bob to see the invite", () => bob.client.getRoom(roomId)?.getMyMembership() === "invite");
            await bob.client.joinRoom(roomId);
            await waitFor("alice to see bob joined", () => alice.client.getRoom(roomId)?.getMember(bob.userId)?.membership === "join");
            await waitFor("bob to see the room as encrypted", () => bob.client.getRoom(roomId)?.hasEncryptionStateEvent());

            const hello = "Hello Bob, this is secret";
            const { event_id: helloId } = await alice.client.sendTextMessage(roomId, hello);
            await assertStoredEncrypted(alice, roomId, helloId, hello);
            const got = await waitForDecrypted(bob, roomId, helloId, hello);
            assert.equal(got.getSender(), alice.userId);
            // The room key came over Olm from alice's device: the session is
            // bound to that device's identity keys.
            const aliceKeys = await alice.crypto.getOwnDeviceKeys();
            assert.equal(got.getSenderKey(), aliceKeys.curve25519);
            assert.equal(got.getClaimedEd25519Key(), aliceKeys.ed25519);
            assert.ok(await bob.crypto.getEncryptionInfoForEvent(got), "encryption info for alice's message");

            const reply = "Hi Alice, bob here, also secret";
            const { event_id: replyId } = await bob.client.sendTextMessage(roomId, reply);
            await assertStoredEncrypted(bob, roomId, replyId, reply);
            await waitForDecrypted(alice, roomId, replyId, reply);

            // A second message in alice's session arrives too (same Megolm session, next index).
            const again = "and one more";
            const { event_id: againId } = await alice.client.sendTextMessage(roomId, again);
            await waitForDecrypted(bob, roomId, againId, again);
        }));

    test("a room key backed up on one device is restored on a new device", () =>
        withClients(async (track) => {
            await server.register("backy");
            const first = track(await loginClient(server, "backy", { deviceName: "first device" }));
            const token = first.client.getAccessToken();

            const roomId = await createEncryptedRoom(first);
            const body = "remember me on my next device";
            const { event_id: eventId } = await first.client.sendTextMessage(roomId, body);
            const raw = await assertStoredEncrypted(first, roomId, eventId, body);
            const sessionId = raw.content.session_id;
            await waitForDecrypted(first, roomId, eventId, body);

            // A new backup version, created by the SDK. resetKeyBackup() only
            // starts the SDK's check of the new version: wait until the SDK
            // has enabled it.
            await first.crypto.resetKeyBackup();
            const version = await waitFor("the SDK to enable the new backup", () =>
                first.crypto.getActiveSessionBackupVersion(),
            );
            const check = await first.crypto.checkKeyBackupAndEnable();
            assert.equal(check?.backupInfo?.version, version);
            assert.ok(check?.trustInfo?.trusted, `backup trusted by its creator: ${JSON.stringify(check?.trustInfo)}`);
            assert.ok(check?.trustInfo?.matchesDecryptionKey, JSON.stringify(check?.trustInfo));
            const info = await first.crypto.getKeyBackupInfo();
            assert.equal(info?.version, version, `backup info: ${JSON.stringify(info)}`);
            assert.equal(info.algorithm, "m.megolm_backup.v1.curve25519-aes-sha2");
            const serverVersion = await server.ok("GET", "/_matrix/client/v3/room_keys/version", { token });
            assert.equal(serverVersion.version, version);
            assert.deepEqual(serverVersion.auth_data.public_key, info.auth_data.public_key);

            // The message's room key reaches the server's backup.
            const backedUp = await waitFor(`session ${sessionId} in backup ${version}`, async () => {
                const keys = await server.ok("GET", `/_matrix/client/v3/room_keys/keys?version=${version}`, { token });
                return keys.rooms?.[roomId]?.sessions?.[sessionId];
            });
            assert.ok(backedUp.session_data?.ciphertext && backedUp.session_data?.ephemeral && backedUp.session_data?.mac);
            await waitFor("the backup's count to include the session", async () => {
                const v = await server.ok("GET", `/_matrix/client/v3/room_keys/version/${version}`, { token });
                return v.count >= 1 && typeof v.etag === "string";
            });

            // The recovery-key path: the backup's private key, taken from the
            // first device, is all the new device gets. The first device stops
            // so that no key can reach the new one by key sharing.
            const privateKey = await first.crypto.getSessionBackupPrivateKey();
            assert.ok(privateKey instanceof Uint8Array && privateKey.length === 32);
            stopClient(first.client);

            const second = track(await loginClient(server, "backy", { deviceName: "second device" }));
            assert.notEqual(second.deviceId, first.deviceId);
            // Before restoring, the message is there but cannot be decrypted.
            await waitFor("the new device to fail to decrypt the old message", () =>
                second.client.getRoom(roomId)?.findEventById(eventId)?.isDecryptionFailure(),
            );

            await second.crypto.storeSessionBackupPrivateKey(privateKey, version);
            const check2 = await second.crypto.checkKeyBackupAndEnable();
            assert.equal(check2?.backupInfo?.version, version);
            const result = await second.crypto.restoreKeyBackup();
            // (The SDK may already have fetched this one session from the
            // backup on its own, once the key was cached: then it is counted
            // in `total` but not as newly `imported`.)
            assert.ok(result.total >= 1, `restore result: ${JSON.stringify(result)}`);
            const exported = await second.crypto.exportRoomKeys();
            assert.ok(
                exported.some((k) => k.room_id === roomId && k.session_id === sessionId),
                `session ${sessionId} in the new device's store after restoring`,
            );

            // The timeline's event decrypts once the key is imported...
            await waitForDecrypted(second, roomId, eventId, body);
            // ...and so does the same event fetched afresh through /messages.
            const page = await second.client.createMessagesRequest(roomId, null, 20, sdk.Direction.Backward);
            const fromMessages = page.chunk.find((e) => e.event_id === eventId);
            assert.ok(fromMessages, `event ${eventId} in /messages`);
            const ev = second.client.getEventMapper()(fromMessages);
            await second.client.decryptEventIfNeeded(ev);
            assert.equal(ev.isDecryptionFailure(), false, `decryption failure: ${ev.decryptionFailureReason}`);
            assert.equal(ev.getType(), "m.room.message");
            assert.equal(ev.getContent().body, body);
        }));
});
