// Two (then three) people chat in headless Chromium against the real
// homeserver: registration, one-on-one chat both ways, typing, ticks,
// images and files, message info, history, notifications, a server restart,
// and the phone-width layout. The scenarios run in order and share state.

import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { ARTIFACTS, ClientServer, eventually, Homeserver, launchChromium, makePng } from "./harness";

const SERVER_NAME = "localhost";
const PASSWORD = "correct horse battery";
const BOB = `@bob:${SERVER_NAME}`;
const CAROL = `@carol:${SERVER_NAME}`;

let dataDir: string;
let homeserver: Homeserver;
let clientServer: ClientServer | undefined;
let baseUrl: string;
let browser: Browser;
const contexts: BrowserContext[] = [];
let alice: Page;
let bob: Page;
let dmRoomId: string;
const pageErrors: string[] = [];

const pages: Page[] = [];

/** Records each SSE sync event a page receives, for test-artifacts/. */
function recordSyncEvents() {
  const Original = window.EventSource;
  const log: string[] = [];
  (window as unknown as { syncLog: string[] }).syncLog = log;
  window.EventSource = class extends Original {
    constructor(url: string | URL, init?: EventSourceInit) {
      super(url, init);
      log.push(`${new Date().toISOString()} open ${String(url).replace(/access_token=[^&]*/, "access_token=…")}`);
      this.addEventListener("error", () => log.push(`${new Date().toISOString()} error readyState=${this.readyState}`));
      this.addEventListener("sync", (e) => log.push(`${new Date().toISOString()} ${(e as MessageEvent).lastEventId} ${(e as MessageEvent).data}`));
    }
  };
}

async function newPage(viewport = { width: 1200, height: 800 }): Promise<Page> {
  const context = await browser.newContext({ viewport, baseURL: baseUrl });
  contexts.push(context);
  const page = await context.newPage();
  pages.push(page);
  await page.addInitScript(recordSyncEvents);
  page.on("pageerror", (e) => pageErrors.push(`${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Uncaught/.test(m.text())) pageErrors.push(m.text());
  });
  return page;
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

async function register(page: Page, username: string): Promise<void> {
  await page.goto("/");
  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("Username").fill(username);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: "Create account" }).click();
  await page.locator('.sync-status[data-sync-status="live"]').waitFor();
}

/** The chat list entry of a room (by its name as shown). */
function roomEntry(page: Page, name: string) {
  return page.locator(".room-item", { has: page.locator(".room-name", { hasText: name }) });
}

/** The message whose text (or file name) is exactly `text`. */
function message(page: Page, text: string) {
  return page.locator(".message").filter({ has: page.getByText(text, { exact: true }) });
}

async function send(page: Page, text: string): Promise<void> {
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill(text);
  await box.press("Enter");
}

async function tickOf(page: Page, text: string): Promise<string | null> {
  return message(page, text).locator(".tick").getAttribute("data-tick");
}

/** Every message's event id and text in a page: each must appear once. */
async function timeline(page: Page): Promise<{ ids: string[]; texts: string[] }> {
  return page.evaluate(() => {
    const items = Array.from(document.querySelectorAll<HTMLElement>(".message"));
    return {
      ids: items.map((m) => m.dataset.eventId ?? `pending:${m.dataset.txnId}`),
      texts: items.map((m) => m.querySelector(".text")?.textContent ?? m.querySelector("img,.file-name")?.getAttribute("alt") ?? ""),
    };
  });
}

function expectNoDuplicates(list: string[]): void {
  const seen = new Set<string>();
  const dupes = list.filter((x) => (seen.has(x) ? true : (seen.add(x), false)));
  expect(dupes).toEqual([]);
}

async function syncLog(page: Page): Promise<string[]> {
  return page.evaluate(() => (window as unknown as { syncLog?: string[] }).syncLog ?? []);
}

async function session(page: Page): Promise<{ accessToken: string; userId: string }> {
  return JSON.parse((await page.evaluate(() => localStorage.getItem("tern.session"))) ?? "null");
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "tern-web-e2e-"));
  homeserver = new Homeserver(dataDir);
  await homeserver.start();
  if (process.env.TERN_SERVES_WEB_CLIENT === "1") {
    baseUrl = homeserver.url;
  } else {
    clientServer = new ClientServer(() => homeserver.port);
    await clientServer.start();
    baseUrl = clientServer.url;
  }
  browser = await launchChromium();
  alice = await newPage();
  bob = await newPage();
});

afterAll(async () => {
  for (const [i, page] of pages.entries()) {
    const log = await syncLog(page).catch(() => []);
    writeFileSync(join(ARTIFACTS, `sync-events-${i + 1}.log`), log.join("\n"));
  }
  for (const context of contexts) await context.close().catch(() => {});
  await browser?.close().catch(() => {});
  await clientServer?.stop();
  await homeserver?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

describe("web client", () => {
  it("registers two people who chat both ways", async () => {
    await Promise.all([register(alice, "alice"), register(bob, "bob")]);

    await alice.getByRole("button", { name: "New chat" }).click();
    await alice.getByLabel("User ID").fill("bob"); // a bare name gets the server's
    await alice.getByRole("button", { name: "Start chat" }).click();
    await alice.getByRole("heading", { name: "bob", level: 2 }).waitFor();
    await send(alice, "Hello Bob!");
    await message(alice, "Hello Bob!").locator('.tick[data-tick="sent"]').waitFor();

    // Bob accepts the invitation from the list.
    const invite = bob.locator(".room-item.invite");
    await invite.waitFor();
    await expect(invite.textContent()).resolves.toContain("alice invited you");
    await bob.getByRole("button", { name: "Accept invitation to alice" }).click();
    await message(bob, "Hello Bob!").waitFor();
    dmRoomId = (await bob.locator(".room-item.selected").getAttribute("data-room-id"))!;
    expect(dmRoomId).toMatch(/^!/);

    await send(bob, "Hi Alice, how are you?");
    await message(alice, "Hi Alice, how are you?").waitFor();
    await send(alice, "Great, thanks");
    await message(bob, "Great, thanks").waitFor();

    // The header shows the other person as online; the list shows the last message.
    await eventually("bob online in alice's header", async () => (await alice.locator(".chat-subtitle").textContent())?.includes("online"));
    await expect(roomEntry(bob, "alice").locator(".room-preview").textContent()).resolves.toBe("Great, thanks");
    await shot(alice, "01-alice-chat");
    await shot(bob, "01-bob-chat");
  });

  it("shows the other side typing, and stops", async () => {
    const box = bob.getByRole("textbox", { name: "Message" });
    await box.click();
    await box.pressSequentially("I am typ", { delay: 20 });
    await alice.locator('.typing-line[data-typing="yes"]', { hasText: "bob is typing…" }).waitFor();
    await shot(alice, "02-typing");
    await box.fill("");
    await box.dispatchEvent("input");
    await alice.locator('.typing-line[data-typing="no"]').waitFor();
  });

  it("ticks go sent, delivered, read", async () => {
    // Bob leaves the chat for the list (Escape), so he receives but does not read.
    await bob.getByRole("textbox", { name: "Message" }).press("Escape");
    await bob.locator(".room-item.selected").waitFor({ state: "detached" });

    // Record every tick alice's message shows, from its first frame.
    await alice.evaluate(() => {
      const log: string[] = [];
      (window as unknown as { tickLog: string[] }).tickLog = log;
      const record = () => {
        const tick = Array.from(document.querySelectorAll<HTMLElement>(".message"))
          .find((m) => m.textContent?.includes("Are you there?"))
          ?.querySelector<HTMLElement>(".tick")?.dataset.tick;
        if (tick && log[log.length - 1] !== tick) log.push(tick);
      };
      new MutationObserver(record).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-tick"] });
    });
    await send(alice, "Are you there?");
    await eventually("delivered", async () => (await tickOf(alice, "Are you there?")) === "delivered");
    await roomEntry(bob, "alice").locator(".unread[data-unread='1']").waitFor();
    await shot(bob, "03-bob-unread");
    await shot(alice, "03-alice-delivered");

    await roomEntry(bob, "alice").locator(".room-open").click();
    await message(bob, "Are you there?").waitFor();
    await eventually("read", async () => (await tickOf(alice, "Are you there?")) === "read");
    await roomEntry(bob, "alice").locator(".unread").waitFor({ state: "detached" });
    const log = await alice.evaluate(() => (window as unknown as { tickLog: string[] }).tickLog);
    expect(log.filter((t) => t !== "sending")).toEqual(["sent", "delivered", "read"]);
    // Earlier messages are read too (a receipt covers what came before it).
    await expect(tickOf(alice, "Hello Bob!")).resolves.toBe("read");
    await shot(alice, "03-alice-read");
  });

  it("message info lists the other member's delivered and read times", async () => {
    await message(alice, "Are you there?").getByRole("button", { name: "Message info" }).click();
    const dialog = alice.getByRole("dialog", { name: "Message info" });
    const row = dialog.locator(`tr[data-user-id="${BOB}"]`);
    await row.waitFor();
    await expect(row.locator('[data-field="delivered"]').textContent()).resolves.not.toBe("—");
    await expect(row.locator('[data-field="read"]').textContent()).resolves.not.toBe("—");
    await expect(dialog.textContent()).resolves.toContain("read by everyone");
    await shot(alice, "04-message-info");
    await alice.keyboard.press("Escape");
    await dialog.waitFor({ state: "detached" });
    // Focus goes back to the button that opened the dialog.
    await eventually("focus back on the info button", () => alice.evaluate(() => document.activeElement?.getAttribute("aria-label") === "Message info"), 2000);
  });

  it("sends an image and a file; the other side sees the image", async () => {
    // What Bob's page fetches: the inline image must be a thumbnail, not the
    // whole file.
    const fetched: string[] = [];
    bob.on("request", (request) => fetched.push(request.url()));
    await alice.getByTestId("file-input").setInputFiles([
      { name: "bands.png", mimeType: "image/png", buffer: makePng(640, 480) },
      { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("minutes of the meeting\n") },
    ]);
    const image = bob.locator(".message img.message-image[alt='bands.png']");
    await image.waitFor();
    await eventually("the image to decode", () => image.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0));
    expect(await image.evaluate((img: HTMLImageElement) => img.src.startsWith("blob:"))).toBe(true);
    expect(fetched.some((url) => url.includes("/_matrix/client/v1/media/thumbnail/"))).toBe(true);
    expect(fetched.some((url) => url.includes("/_matrix/client/v1/media/download/"))).toBe(false);
    // The file downloads with its name and exactly the bytes Alice sent.
    const downloadButton = bob.getByRole("button", { name: "Download notes.txt" });
    await downloadButton.waitFor();
    const [download] = await Promise.all([bob.waitForEvent("download"), downloadButton.click()]);
    expect(download.suggestedFilename()).toBe("notes.txt");
    expect(readFileSync(await download.path(), "utf8")).toBe("minutes of the meeting\n");
    await alice
      .locator(".message", { has: alice.locator("img[alt='bands.png']") })
      .locator(".tick:not([data-tick='sending'])")
      .waitFor();
    await message(alice, "notes.txt").locator(".tick[data-tick]").waitFor();
    await shot(bob, "05-bob-image");

    // Full size opens in a dialog, fetched with the token as well.
    await bob.getByRole("button", { name: "Open image bands.png" }).click();
    const full = bob.locator(".full-image");
    await eventually("full image", () => full.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth === 640));
    await bob.keyboard.press("Escape");
    await full.waitFor({ state: "detached" });
  });

  it("notifies of messages while the tab is hidden", async () => {
    await alice.evaluate(() => {
      const shown: { title: string; body?: string }[] = [];
      (window as unknown as { shown: typeof shown }).shown = shown;
      class FakeNotification {
        static permission = "granted";
        onclick: (() => void) | null = null;
        constructor(title: string, options?: { body?: string }) {
          shown.push({ title, body: options?.body });
        }
        close() {}
      }
      Object.defineProperty(window, "Notification", { value: FakeNotification, configurable: true });
      Object.defineProperty(document, "hidden", { get: () => true, configurable: true });
    });
    await send(bob, "Ping while you are away");
    const shown = await eventually("a notification", () => alice.evaluate(() => (window as unknown as { shown: { title: string; body?: string }[] }).shown[0]));
    expect(shown).toEqual({ title: "bob", body: "Ping while you are away" });
    await alice.evaluate(() => {
      delete (document as unknown as { hidden?: boolean }).hidden;
    });
  });

  it("pages back through history without showing anything twice", async () => {
    const { accessToken } = await session(alice);
    for (let i = 1; i <= 60; i++) {
      const response = await fetch(`${homeserver.url}/_matrix/client/v3/rooms/${encodeURIComponent(dmRoomId)}/send/m.room.message/history-${i}`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${accessToken}`, "Content-Type": "application/json" },
        body: JSON.stringify({ msgtype: "m.text", body: `history ${i}` }),
      });
      expect(response.status).toBe(200);
    }
    await message(bob, "history 60").waitFor();
    // A fresh load: only the latest page arrives by sync; the rest by scrolling up.
    await bob.reload();
    await roomEntry(bob, "alice").locator(".room-open").click();
    await message(bob, "history 60").waitFor();
    await eventually(
      "the start of the conversation",
      async () => {
        await bob.locator(".messages").evaluate((el) => el.scrollTo(0, 0));
        return bob.getByText("Start of the conversation").isVisible();
      },
      20_000,
    );
    await message(bob, "Hello Bob!").waitFor();
    const { ids, texts } = await timeline(bob);
    expectNoDuplicates(ids);
    const history = texts.filter((t) => t.startsWith("history "));
    expect(history).toEqual(Array.from({ length: 60 }, (_, i) => `history ${i + 1}`));
    await bob.locator(".messages").evaluate((el) => el.scrollTo(0, el.scrollHeight));
  });

  it("survives a server restart mid-chat: nothing lost, nothing twice", async () => {
    await send(alice, "Before the restart");
    await message(bob, "Before the restart").waitFor();

    const stopped = await homeserver.stop();
    expect(stopped.signal ?? stopped.code).not.toBe("SIGKILL");
    // Written while the server is down: retried with the same transaction id.
    await send(alice, "Sent while the server was down");
    await alice.locator('.sync-status[data-sync-status="reconnecting"]').waitFor();
    await shot(alice, "06-alice-reconnecting");
    // Down long enough for EventSource's own retry (1 s) to fail too.
    await new Promise((r) => setTimeout(r, 2500));
    await homeserver.start();

    await message(bob, "Sent while the server was down").waitFor({ timeout: 30_000 });
    await alice.locator('.sync-status[data-sync-status="live"]').waitFor({ timeout: 30_000 });
    await bob.locator('.sync-status[data-sync-status="live"]').waitFor({ timeout: 30_000 });
    await send(bob, "After the restart");
    await message(alice, "After the restart").waitFor();
    await eventually("read after restart", async () => (await tickOf(alice, "Sent while the server was down")) === "read", 20_000);

    for (const page of [alice, bob]) {
      const { ids, texts } = await timeline(page);
      expectNoDuplicates(ids);
      for (const text of ["Before the restart", "Sent while the server was down", "After the restart"]) {
        expect(texts.filter((t) => t === text)).toHaveLength(1);
      }
    }
    await shot(alice, "06-alice-after-restart");
    if (clientServer) {
      // Behind a proxy that answered 502, EventSource gave up; the client
      // opened a new stream from where it was.
      const log = await syncLog(alice);
      expect(log.some((line) => / open .*[?&]since=v1-/.test(line))).toBe(true);
    }
  });

  it("reconnects after network loss and shows what it missed once", async () => {
    await bob.context().setOffline(true);
    await bob.locator('.sync-status[data-sync-status="reconnecting"]').waitFor();
    await send(alice, "While you were offline 1");
    await send(alice, "While you were offline 2");
    await bob.context().setOffline(false);
    await message(bob, "While you were offline 2").waitFor({ timeout: 20_000 });
    await bob.locator('.sync-status[data-sync-status="live"]').waitFor();
    const { ids, texts } = await timeline(bob);
    expectNoDuplicates(ids);
    expect(texts.filter((t) => t.startsWith("While you were offline"))).toEqual(["While you were offline 1", "While you were offline 2"]);
  });

  it("works at phone width: a group with three people", async () => {
    const carol = await newPage({ width: 375, height: 740 });
    await register(carol, "carol");
    // Only the list shows; no chat pane.
    expect(await carol.locator(".chat-pane").isVisible()).toBe(false);

    await alice.getByRole("button", { name: "New group" }).click();
    await alice.getByLabel("Group name").fill("Lunch club");
    await alice.getByLabel("Members to invite").fill(`${BOB}, carol`);
    await alice.getByRole("button", { name: "Create group" }).click();
    await alice.getByRole("heading", { name: "Lunch club", level: 2 }).waitFor();

    await carol.getByRole("button", { name: "Accept invitation to Lunch club" }).click();
    await bob.getByRole("button", { name: "Accept invitation to Lunch club" }).click();
    await carol.getByRole("heading", { name: "Lunch club", level: 2 }).waitFor();
    expect(await carol.locator(".sidebar").isVisible()).toBe(false);
    const box = await carol.locator(".chat").boundingBox();
    expect(box?.width).toBeLessThanOrEqual(375);
    expect(await carol.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(375);

    await send(carol, "Pizza at noon?");
    await message(alice, "Pizza at noon?").locator(".sender", { hasText: "carol" }).waitFor();
    await send(alice, "Yes please");
    await message(carol, "Yes please").waitFor();
    await shot(carol, "07-phone-chat");

    // Message info in a group lists both other members.
    await eventually("read by both", async () => (await tickOf(alice, "Yes please")) === "read", 20_000);
    await message(alice, "Yes please").getByRole("button", { name: "Message info" }).click();
    const dialog = alice.getByRole("dialog", { name: "Message info" });
    await dialog.locator(`tr[data-user-id="${BOB}"]`).waitFor();
    await dialog.locator(`tr[data-user-id="${CAROL}"]`).waitFor();
    await shot(alice, "07-group-message-info");
    await alice.keyboard.press("Escape");

    // Back to the list, focus on the chat we came from.
    await carol.getByRole("button", { name: "Back to chats" }).click();
    await carol.locator(".sidebar").waitFor();
    expect(await carol.locator(".chat-pane").isVisible()).toBe(false);
    const focusedRoom = () => carol.evaluate(() => document.activeElement?.closest(".room-item")?.querySelector(".room-name")?.textContent);
    await eventually("focus on the chat we came from", async () => (await focusedRoom()) === "Lunch club", 2_000);
    await shot(carol, "07-phone-list");

    // Carol leaves; the others see it.
    await carol.locator(".room-item", { hasText: "Lunch club" }).locator(".room-open").click();
    await carol.getByRole("button", { name: "Leave chat" }).click();
    await carol.getByRole("dialog", { name: "Leave chat" }).getByRole("button", { name: "Leave" }).click();
    await carol.locator(".room-item", { hasText: "Lunch club" }).waitFor({ state: "detached" });
    await alice.locator(".notice", { hasText: "carol left" }).waitFor();
  });

  it("works from the keyboard alone", async () => {
    await roomEntry(bob, "alice").locator(".room-open").click();
    // Escape leaves the chat for the list, with focus on the chat just left.
    await alice.getByRole("textbox", { name: "Message" }).focus();
    await alice.keyboard.press("Escape");
    const focusedRoom = () => alice.evaluate(() => document.activeElement?.closest(".room-item")?.querySelector(".room-name")?.textContent);
    await eventually("focus on the list", async () => (await focusedRoom()) === "Lunch club");
    // Arrows move through the list; Enter opens; the composer has focus.
    await alice.keyboard.press("ArrowDown");
    expect(await focusedRoom()).toBe("bob");
    await alice.keyboard.press("ArrowUp");
    await alice.keyboard.press("ArrowDown");
    await alice.keyboard.press("Enter");
    await alice.getByRole("heading", { name: "bob", level: 2 }).waitFor();
    await eventually("composer focused", () => alice.evaluate(() => document.activeElement?.getAttribute("aria-label") === "Message"));
    await alice.keyboard.type("Typed without a mouse");
    await alice.keyboard.press("Enter");
    await message(bob, "Typed without a mouse").waitFor();
    // Shift+Enter is a new line, not a send.
    await alice.keyboard.type("line one");
    await alice.keyboard.press("Shift+Enter");
    await alice.keyboard.type("line two");
    await alice.keyboard.press("Enter");
    await message(bob, "line one\nline two").waitFor();
  });

  it("labels every control", async () => {
    for (const page of [alice, bob]) {
      const unlabelled = await page.evaluate(() =>
        Array.from(document.querySelectorAll<HTMLElement>("button, input:not([type=file]), textarea, [role=img]"))
          .filter((el) => {
            const labelled =
              el.getAttribute("aria-label") ||
              el.getAttribute("aria-labelledby") ||
              (el.id && document.querySelector(`label[for="${el.id}"]`)) ||
              el.textContent?.trim();
            return !labelled;
          })
          .map((el) => el.outerHTML.slice(0, 80)),
      );
      expect(unlabelled).toEqual([]);
    }
  });

  it("logs out and back in", async () => {
    await bob.getByRole("button", { name: "Log out" }).click();
    await bob.getByRole("heading", { name: "Sign in to Tern" }).waitFor();
    expect(await bob.evaluate(() => localStorage.getItem("tern.session"))).toBeNull();
    await bob.getByLabel("Username").fill("bob");
    await bob.getByLabel("Password").fill(PASSWORD);
    await bob.getByRole("button", { name: "Sign in" }).click();
    await roomEntry(bob, "alice").waitFor();
    await roomEntry(bob, "Lunch club").waitFor();
  });

  it("raised no script or CSP errors", () => {
    writeFileSync(join(ARTIFACTS, "page-errors.txt"), pageErrors.join("\n"));
    expect(pageErrors).toEqual([]);
  });
});
