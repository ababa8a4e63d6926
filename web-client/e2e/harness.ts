// What the end-to-end tests run against: the real homeserver binary on a
// free loopback port, the built client (served by a small static server that
// forwards the API to the homeserver, or by the homeserver itself when
// TERN_SERVES_WEB_CLIENT=1), and Debian's Chromium driven by playwright-core.

import { spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, existsSync, mkdirSync, readFileSync } from "node:fs";
import { createServer, request, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { homedir } from "node:os";
import { extname, join, normalize } from "node:path";
import { fileURLToPath } from "node:url";
import { deflateSync } from "node:zlib";

import { chromium, type Browser } from "playwright-core";

export const ROOT = fileURLToPath(new URL("..", import.meta.url)).replace(/\/$/, "");
export const DIST = join(ROOT, "dist");
export const ARTIFACTS = join(ROOT, "test-artifacts");

export function homeserverBinary(): string {
  return process.env.TERN_BIN ?? join(homedir(), ".cache/tern-target/release/homeserver");
}

/** The homeserver, started and stopped like a person would (SIGTERM). */
export class Homeserver {
  private process?: ChildProcess;
  port = 0;
  private starts = 0;

  constructor(private readonly dataDir: string) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Starts on `this.port` (a free one the first time). */
  async start(): Promise<void> {
    const binary = homeserverBinary();
    if (!existsSync(binary)) throw new Error(`no homeserver binary at ${binary} (set TERN_BIN)`);
    mkdirSync(ARTIFACTS, { recursive: true });
    this.starts += 1;
    const log = createWriteStream(join(ARTIFACTS, `homeserver-${this.starts}.log`));
    const child = spawn(binary, ["--listen", `127.0.0.1:${this.port}`, "--data-dir", this.dataDir, "--allow-registration", "--disable-rate-limits"], {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? "info", NO_COLOR: "1" },
    });
    this.process = child;
    child.stdout!.pipe(log);
    this.port = await new Promise<number>((resolvePort, reject) => {
      let seen = "";
      let found = false;
      const timer = setTimeout(() => reject(new Error(`homeserver did not start:\n${seen}`)), 20_000);
      child.stderr!.on("data", (chunk: Buffer) => {
        log.write(chunk);
        if (found) return;
        seen += chunk.toString();
        // eslint-disable-next-line no-control-regex
        const match = /listening addr=[\d.]+:(\d+)/.exec(seen.replace(/\x1b\[[0-9;]*m/g, ""));
        if (match) {
          found = true;
          clearTimeout(timer);
          resolvePort(Number(match[1]));
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        if (!found) reject(new Error(`homeserver exited with ${code}:\n${seen}`));
      });
    });
  }

  /** SIGTERM, and wait for the process to end (SIGKILL after `graceMs`). */
  async stop(graceMs = 15_000): Promise<{ code: number | null; signal: NodeJS.Signals | null; ms: number }> {
    const child = this.process;
    this.process = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return { code: child?.exitCode ?? null, signal: null, ms: 0 };
    const started = Date.now();
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((done) => child.once("exit", (code, signal) => done({ code, signal })));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    const result = await exited;
    clearTimeout(timer);
    return { ...result, ms: Date.now() - started };
  }
}

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".ico": "image/x-icon",
  ".json": "application/json",
  ".webmanifest": "application/manifest+json",
};

/** The server's Content-Security-Policy for client pages, so the tests catch
 *  anything the embedded client would be refused. */
const CLIENT_CSP =
  "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/** Serves dist/ and forwards /_matrix and /_tern to the homeserver, streaming
 *  (SSE included); a homeserver that is down answers 502, as a reverse proxy
 *  would. */
export class ClientServer {
  private server?: Server;
  port = 0;

  constructor(private readonly upstreamPort: () => number) {}

  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      const path = (req.url ?? "/").split("?")[0];
      if (path.startsWith("/_matrix/") || path.startsWith("/_tern/")) this.forward(req, res);
      else this.serveFile(path, res);
    });
    await new Promise<void>((done) => this.server!.listen(0, "127.0.0.1", done));
    const address = this.server.address();
    this.port = typeof address === "object" && address ? address.port : 0;
  }

  async stop(): Promise<void> {
    if (!this.server) return;
    this.server.closeAllConnections();
    await new Promise<void>((done) => this.server!.close(() => done()));
    this.server = undefined;
  }

  private serveFile(path: string, res: ServerResponse): void {
    const name = path === "/" ? "/index.html" : decodeURIComponent(path);
    const file = normalize(join(DIST, name));
    if (!file.startsWith(DIST) || !existsSync(file) || name.endsWith("/")) {
      res.writeHead(404, { "Content-Type": "application/json" }).end('{"errcode":"M_NOT_FOUND","error":"No such file"}');
      return;
    }
    const headers: Record<string, string> = {
      "Content-Type": TYPES[extname(file)] ?? "application/octet-stream",
      "Cache-Control": "no-cache",
      "Referrer-Policy": "no-referrer",
    };
    if (file.endsWith(".html")) headers["Content-Security-Policy"] = CLIENT_CSP;
    res.writeHead(200, headers).end(readFileSync(file));
  }

  private forward(req: IncomingMessage, res: ServerResponse): void {
    const upstream = request(
      { host: "127.0.0.1", port: this.upstreamPort(), method: req.method, path: req.url, headers: req.headers },
      (answer: IncomingMessage) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        res.flushHeaders();
        answer.pipe(res);
        answer.on("error", () => res.destroy());
        answer.on("aborted", () => res.destroy());
      },
    );
    upstream.on("error", () => {
      if (!res.headersSent) {
        res.writeHead(502, { "Content-Type": "application/json" }).end('{"errcode":"M_UNKNOWN","error":"homeserver unreachable"}');
      } else {
        res.destroy();
      }
    });
    // The browser went away (an EventSource closed): end the upstream stream too.
    res.on("close", () => upstream.destroy());
    req.pipe(upstream);
  }
}

export async function launchChromium(): Promise<Browser> {
  const executablePath = process.env.CHROMIUM_BIN ?? "/usr/bin/chromium";
  if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath} (apt-get install -y chromium)`);
  const args = [
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // Two windows chatting: neither may be throttled as a background page.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
  ];
  if (process.getuid?.() === 0) args.push("--no-sandbox");
  return chromium.launch({ executablePath, headless: true, args });
}

/** A w×h PNG of two colour bands (for upload tests), made without a library. */
export function makePng(width: number, height: number): Buffer {
  const crcTable = Array.from({ length: 256 }, (_, n) => {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    return c >>> 0;
  });
  const crc = (data: Buffer) => {
    let c = 0xffffffff;
    for (const byte of data) c = crcTable[(c ^ byte) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  };
  const chunk = (type: string, data: Buffer) => {
    const length = Buffer.alloc(4);
    length.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, "ascii"), data]);
    const sum = Buffer.alloc(4);
    sum.writeUInt32BE(crc(body));
    return Buffer.concat([length, body, sum]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 2; // RGB
  const rows: Buffer[] = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + width * 3);
    for (let x = 0; x < width; x++) {
      const top = y < height / 2;
      row.set(top ? [11, 92, 69] : [242, 177, 52], 1 + x * 3);
    }
    rows.push(row);
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk("IHDR", header),
    chunk("IDAT", deflateSync(Buffer.concat(rows))),
    chunk("IEND", Buffer.alloc(0)),
  ]);
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually<T>(what: string, check: () => Promise<T> | T, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
      last = value;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
