// The harness for the matrix-js-sdk interop tests: starts and stops the Tern
// binary named by TERN_BIN, registers users, logs them in through the SDK as
// Element Web does, and waits for conditions with a deadline.

import { spawn } from "node:child_process";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";

import * as sdk from "matrix-js-sdk";
import { logger as sdkLogger } from "matrix-js-sdk/lib/logger.js";

const STARTUP_TIMEOUT_MS = 30_000;
const SHUTDOWN_GRACE_MS = 10_000;
const LOG_TAIL_LINES = 80;
export const PASSWORD = "correct horse battery staple";

// The SDK and the Rust crypto's tracing both write to the console, at debug
// level, a lot. Their output goes to a file beside the server's log instead,
// and its path is shown when a test fails.
let sdkLogPath = null;
let sdkLogFd = null;
export function captureSdkLogs(dir) {
    sdkLogPath = path.join(dir, "sdk.log");
    sdkLogFd = fs.openSync(sdkLogPath, "a");
    const write = (level) => (...args) => {
        const line = args
            .map((a) => (a instanceof Error ? a.stack : typeof a === "string" ? a : safeJson(a)))
            .join(" ");
        fs.writeSync(sdkLogFd, `${new Date().toISOString()} ${level} ${line}\n`);
    };
    for (const level of ["debug", "info", "log", "trace"]) console[level] = write(level);
    // Warnings and errors go to the file too: the SDK warns on every retried
    // request. A test failure says where to look.
    console.warn = write("warn");
    console.error = write("error");
    sdkLogger.setLevel("debug");
    return sdkLogPath;
}

function safeJson(value) {
    try {
        return JSON.stringify(value);
    } catch {
        return String(value);
    }
}

function freePort() {
    return new Promise((resolve, reject) => {
        const srv = net.createServer();
        srv.unref();
        srv.on("error", reject);
        srv.listen(0, "127.0.0.1", () => {
            const { port } = srv.address();
            srv.close(() => resolve(port));
        });
    });
}

function logTail(file, lines = LOG_TAIL_LINES) {
    try {
        const tail = fs.readFileSync(file, "utf8").split("\n").slice(-lines).join("\n");
        return tail.trim() ? tail : "(server log is empty)";
    } catch (e) {
        return `(could not read server log ${file}: ${e.message})`;
    }
}

/**
 * A running Tern server on a free loopback port with a fresh data directory.
 * `stop()` sends SIGTERM to its process group, SIGKILL after 10 s.
 */
export class TernServer {
    static async start() {
        const binary = process.env.TERN_BIN;
        if (!binary) {
            throw new Error(
                "TERN_BIN is not set: point it at the built homeserver binary, e.g. " +
                    "TERN_BIN=$CARGO_TARGET_DIR/release/homeserver npm test",
            );
        }
        try {
            fs.accessSync(binary, fs.constants.X_OK);
        } catch {
            throw new Error(`TERN_BIN=${binary} is not an executable file`);
        }
        const workdir = fs.mkdtempSync(path.join(os.tmpdir(), "tern-js-sdk-"));
        const dataDir = path.join(workdir, "data");
        fs.mkdirSync(dataDir);
        const logPath = path.join(workdir, "server.log");
        const port = await freePort();
        const args = [
            "--listen",
            `127.0.0.1:${port}`,
            "--server-name",
            "localhost",
            "--data-dir",
            dataDir,
            "--allow-registration",
            "--disable-rate-limits",
        ];
        const logFd = fs.openSync(logPath, "a");
        const proc = spawn(binary, args, {
            stdio: ["ignore", logFd, logFd],
            // Its own process group, so that stopping it stops anything it spawned.
            detached: true,
        });
        fs.closeSync(logFd);
        const server = new TernServer(proc, workdir, logPath, `http://127.0.0.1:${port}`, [binary, ...args]);
        try {
            await server.waitUntilReady();
        } catch (e) {
            await server.stop();
            throw e;
        }
        return server;
    }

    constructor(proc, workdir, logPath, baseUrl, cmd) {
        this.proc = proc;
        this.workdir = workdir;
        this.logPath = logPath;
        this.baseUrl = baseUrl;
        this.cmd = cmd;
        this.exitCode = null;
        this.exited = new Promise((resolve) => {
            proc.on("exit", (code, signal) => {
                this.exitCode = code ?? signal;
                resolve();
            });
        });
        // Last resort if the test process exits without running the after hook.
        this.onExit = () => this.killGroup("SIGKILL");
        process.on("exit", this.onExit);
    }

    get alive() {
        return this.exitCode === null;
    }

    killGroup(signal) {
        try {
            process.kill(-this.proc.pid, signal);
        } catch {
            // Already gone.
        }
    }

    async waitUntilReady() {
        const url = `${this.baseUrl}/_matrix/client/versions`;
        const deadline = Date.now() + STARTUP_TIMEOUT_MS;
        let last = "no attempt made";
        while (Date.now() < deadline) {
            if (!this.alive) {
                throw new Error(
                    `Tern exited (${this.exitCode}) before answering GET ${url}\n` +
                        `command: ${this.cmd.join(" ")}\n--- server log ---\n${logTail(this.logPath)}`,
                );
            }
            try {
                const resp = await fetch(url, { signal: AbortSignal.timeout(2000) });
                if (resp.status === 200) return;
                last = `HTTP ${resp.status}`;
            } catch (e) {
                last = String(e.cause ?? e);
            }
            await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error(
            `Tern did not answer GET ${url} with 200 within ${STARTUP_TIMEOUT_MS / 1000} s (last: ${last})\n` +
                `--- server log ---\n${logTail(this.logPath)}`,
        );
    }

    async stop() {
        process.off("exit", this.onExit);
        if (!this.alive) {
            this.killGroup("SIGKILL");
            return;
        }
        this.killGroup("SIGTERM");
        let timer;
        const killed = await Promise.race([
            this.exited.then(() => false),
            new Promise((r) => (timer = setTimeout(() => r(true), SHUTDOWN_GRACE_MS))),
        ]);
        clearTimeout(timer);
        if (killed) {
            this.killGroup("SIGKILL");
            await this.exited;
        }
    }

    /** What a failing test shows: whether the server died, and its log's tail. */
    describe() {
        const state = this.alive ? "still running" : `EXITED (${this.exitCode})`;
        return `Tern ${this.baseUrl} ${state}; server log ${this.logPath}\n--- last lines ---\n${logTail(this.logPath)}`;
    }

    /** A raw client-server request; returns {status, body}. */
    async request(method, urlPath, { token, body } = {}) {
        const headers = {};
        if (token) headers.Authorization = `Bearer ${token}`;
        if (body !== undefined) headers["Content-Type"] = "application/json";
        const resp = await fetch(this.baseUrl + urlPath, {
            method,
            headers,
            body: body === undefined ? undefined : JSON.stringify(body),
            signal: AbortSignal.timeout(10_000),
        });
        const text = await resp.text();
        let json;
        try {
            json = JSON.parse(text);
        } catch {
            json = text;
        }
        return { status: resp.status, body: json };
    }

    /** A raw request that must answer 200; anything else throws with the exchange. */
    async ok(method, urlPath, opts = {}) {
        const resp = await this.request(method, urlPath, opts);
        if (resp.status !== 200) {
            throw new Error(
                `${method} ${urlPath} ${opts.body ? JSON.stringify(opts.body) : ""}\n` +
                    `-> ${resp.status} ${JSON.stringify(resp.body)}`,
            );
        }
        return resp.body;
    }

    /** Registers `localpart` (m.login.dummy) with the shared test password. */
    async register(localpart) {
        const body = await this.ok("POST", "/_matrix/client/v3/register", {
            body: { username: localpart, password: PASSWORD, auth: { type: "m.login.dummy" } },
        });
        return body.user_id;
    }
}

/** Polls `check` (sync or async) every 50 ms until it returns a truthy value or `ms` pass. */
export async function waitFor(what, check, ms = 20_000) {
    const deadline = Date.now() + ms;
    let lastError;
    for (;;) {
        try {
            const value = await check();
            if (value) return value;
            lastError = undefined;
        } catch (e) {
            lastError = e;
        }
        if (Date.now() > deadline) {
            throw new Error(
                `timed out after ${ms / 1000} s waiting for ${what}` +
                    (lastError ? `; last error: ${lastError.stack ?? lastError}` : ""),
            );
        }
        await new Promise((r) => setTimeout(r, 50));
    }
}

/**
 * Logs `localpart` in as Element Web does: a throwaway client asks for the
 * login flows and sends m.login.password with an m.id.user identifier; a new
 * client is created from the returned credentials, its Rust crypto started
 * (an in-memory store: no IndexedDB in Node), then its sync loop, which must
 * reach PREPARED and then SYNCING.
 *
 * `clientOpts` are added to createClient's options (e.g. `timelineSupport`),
 * `startOpts` to startClient's (e.g. `threadSupport`, `initialSyncLimit`,
 * which is 20 unless given).
 */
export async function loginClient(
    server,
    localpart,
    { deviceName = "js-sdk interop", clientOpts = {}, startOpts = {} } = {},
) {
    const tmp = sdk.createClient({ baseUrl: server.baseUrl });
    const flows = await tmp.loginFlows();
    if (!flows.flows.some((f) => f.type === "m.login.password")) {
        throw new Error(`GET /login offers no m.login.password: ${JSON.stringify(flows)}`);
    }
    const creds = await tmp.loginRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: localpart },
        password: PASSWORD,
        initial_device_display_name: deviceName,
    });
    const client = sdk.createClient({
        baseUrl: server.baseUrl,
        userId: creds.user_id,
        accessToken: creds.access_token,
        deviceId: creds.device_id,
        ...clientOpts,
    });
    const states = [];
    try {
        await client.initRustCrypto({ useIndexedDB: false });
        client.on(sdk.ClientEvent.Sync, (state) => states.push(state));
        await client.startClient({ initialSyncLimit: 20, ...startOpts });
        await waitFor(
            `${creds.user_id} to reach sync state SYNCING`,
            () => client.getSyncState() === sdk.SyncState.Syncing,
            30_000,
        );
    } catch (e) {
        stopClient(client);
        e.message += ` (sync states so far: ${states.join(", ") || "none"})`;
        throw e;
    }
    return { client, crypto: client.getCrypto(), userId: creds.user_id, deviceId: creds.device_id, states };
}

/**
 * `owner` creates a room (`createRoom` options, a private chat unless told)
 * inviting `members`; each member sees the invite and joins, and the call
 * returns the room's id once the owner and every member see everyone joined.
 */
export async function createSharedRoom(owner, members = [], options = {}) {
    const { room_id: roomId } = await owner.client.createRoom({
        preset: "private_chat",
        ...options,
        invite: members.map((m) => m.userId),
    });
    for (const m of members) {
        await waitFor(`${m.userId} to see the invite to ${roomId}`, () =>
            ["invite", "join"].includes(m.client.getRoom(roomId)?.getMyMembership()),
        );
        await m.client.joinRoom(roomId);
    }
    const everyone = [owner, ...members];
    await waitFor(`${everyone.map((w) => w.userId).join(", ")} to see each other joined ${roomId}`, () =>
        everyone.every((viewer) =>
            everyone.every((w) => viewer.client.getRoom(roomId)?.getMember(w.userId)?.membership === "join"),
        ),
    );
    return roomId;
}

/** Waits until `who`'s copy of the room holds `eventId` (in its timeline or a thread's); returns the event. */
export function waitForEvent(who, roomId, eventId, ms) {
    return waitFor(
        `${who.userId} (${who.deviceId}) to see ${eventId} in ${roomId}`,
        () => who.client.getRoom(roomId)?.findEventById(eventId),
        ms,
    );
}

/** Stops a client's sync loop and its crypto (frees the OlmMachine). */
export function stopClient(client) {
    try {
        client.stopClient();
    } catch {
        // A half-started client: nothing more to stop.
    }
}

/** UIA callback for bootstrapCrossSigning: one m.login.password stage. */
export function passwordAuth(userId) {
    return async (makeRequest) => {
        await makeRequest({
            type: "m.login.password",
            identifier: { type: "m.id.user", user: userId },
            password: PASSWORD,
        });
    };
}

export { sdk };
