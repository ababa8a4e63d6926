// Stages a conversation and saves the README's picture, docs/web-client.png.
// Not part of the test suite: `npm run screenshot`.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import type { Page } from "playwright-core";
import { it } from "vitest";

import { ClientServer, Homeserver, launchChromium, makePng, ROOT } from "./harness";

async function register(page: Page, name: string) {
  await page.goto("/");
  await page.getByRole("button", { name: "Create an account" }).click();
  await page.getByLabel("Username").fill(name);
  await page.getByLabel("Password").fill("correct horse battery");
  await page.getByRole("button", { name: "Create account" }).click();
  await page.locator('.sync-status[data-sync-status="live"]').waitFor();
}

async function send(page: Page, text: string) {
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill(text);
  await box.press("Enter");
  await page.locator(".message", { hasText: text }).locator(".tick:not([data-tick='sending'])").waitFor();
}

it("saves docs/web-client.png", async () => {
  const dataDir = mkdtempSync(join(tmpdir(), "tern-shot-"));
  const homeserver = new Homeserver(dataDir);
  await homeserver.start();
  const server = new ClientServer(() => homeserver.port);
  await server.start();
  const browser = await launchChromium();
  try {
    const open = async () => (await browser.newContext({ viewport: { width: 1100, height: 680 }, baseURL: server.url })).newPage();
    const [maya, sam, lee] = await Promise.all([open(), open(), open()]);
    await Promise.all([register(maya, "maya"), register(sam, "sam"), register(lee, "lee")]);

    await lee.getByRole("button", { name: "New group" }).click();
    await lee.getByLabel("Group name").fill("Climbing Saturday");
    await lee.getByLabel("Members to invite").fill("maya, sam");
    await lee.getByRole("button", { name: "Create group" }).click();
    await maya.getByRole("button", { name: "Accept invitation to Climbing Saturday" }).click();
    await maya.getByRole("textbox", { name: "Message" }).press("Escape");
    await send(lee, "Who's in for the 9am slot?");
    await send(lee, "I can bring the rope");

    await maya.getByRole("button", { name: "New chat" }).click();
    await maya.getByLabel("User ID").fill("sam");
    await maya.getByRole("button", { name: "Start chat" }).click();
    await sam.getByRole("button", { name: "Accept invitation to maya" }).click();
    await send(maya, "Morning! Did you see the new bouldering wall?");
    await send(sam, "Yes! Went on Tuesday, the overhang is brutal");
    await sam.getByTestId("file-input").setInputFiles({ name: "wall.png", mimeType: "image/png", buffer: makePng(480, 320) });
    await maya.locator("img.message-image").waitFor();
    await send(maya, "Looks great. Lunch after, 12:30?");
    await maya.locator(".message", { hasText: "12:30" }).locator('.tick[data-tick="read"]').waitFor();
    await sam.getByRole("textbox", { name: "Message" }).pressSequentially("Sounds good", { delay: 30 });
    await maya.locator('.typing-line[data-typing="yes"]').waitFor();
    await maya.mouse.move(0, 0);
    await maya.evaluate(() => (document.activeElement as HTMLElement | null)?.blur());
    await maya.screenshot({ path: join(ROOT, "..", "docs", "web-client.png") });
  } finally {
    await browser.close();
    await server.stop();
    await homeserver.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});
