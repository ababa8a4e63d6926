import { describe, expect, it } from "vitest";

import { formatDay, formatLastSeen, formatListTime, formatSize, messageSummary } from "../src/format";

// A Wednesday at noon, local time, so that "yesterday" and "this week" stay
// on the same side of midnight whatever the machine's time zone.
const NOW = new Date(2025, 5, 11, 12, 0, 0).getTime();
const HOUR = 3_600_000;
const DAY = 24 * HOUR;

describe("messageSummary", () => {
  it("is the body of a text message", () => {
    expect(messageSummary({ msgtype: "m.text", body: "hello" })).toBe("hello");
    expect(messageSummary({ msgtype: "m.emote", body: "waves" })).toBe("waves");
  });

  it("names the kind of a medium before its name", () => {
    expect(messageSummary({ msgtype: "m.image", body: "bands.png" })).toBe("Photo: bands.png");
    expect(messageSummary({ msgtype: "m.file", body: "notes.txt" })).toBe("File: notes.txt");
    expect(messageSummary({ msgtype: "m.video", body: "clip.mp4" })).toBe("Video: clip.mp4");
    expect(messageSummary({ msgtype: "m.audio", body: "memo.ogg" })).toBe("Audio: memo.ogg");
  });

  it("is empty for content without a text body (a redacted message)", () => {
    expect(messageSummary({})).toBe("");
    expect(messageSummary({ msgtype: "m.text", body: 42 })).toBe("");
  });
});

describe("formatListTime", () => {
  it("says yesterday, then the weekday, then the date", () => {
    expect(formatListTime(NOW - DAY, NOW)).toBe("Yesterday");
    expect(formatListTime(NOW - 3 * DAY, NOW)).toBe(new Intl.DateTimeFormat(undefined, { weekday: "short" }).format(NOW - 3 * DAY));
    expect(formatListTime(NOW - 30 * DAY, NOW)).toBe(
      new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" }).format(NOW - 30 * DAY),
    );
  });

  it("is the time of day for today, and for a message stamped after `now` (our clock behind)", () => {
    const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
    expect(formatListTime(NOW - HOUR, NOW)).toBe(time.format(NOW - HOUR));
    expect(formatListTime(NOW + DAY, NOW)).toBe(time.format(NOW + DAY));
  });
});

describe("formatDay", () => {
  it("says today and yesterday, else the date", () => {
    expect(formatDay(NOW - HOUR, NOW)).toBe("Today");
    expect(formatDay(NOW + HOUR, NOW)).toBe("Today");
    expect(formatDay(NOW - DAY, NOW)).toBe("Yesterday");
    expect(formatDay(NOW - 2 * DAY, NOW)).not.toMatch(/Today|Yesterday/);
  });
});

describe("formatLastSeen", () => {
  it("counts minutes for the last hour", () => {
    expect(formatLastSeen(NOW - 10_000, NOW)).toBe("last seen just now");
    expect(formatLastSeen(NOW + 10_000, NOW)).toBe("last seen just now");
    expect(formatLastSeen(NOW - 5 * 60_000, NOW)).toBe("last seen 5 min ago");
  });

  it("gives the time today or yesterday, else the date", () => {
    expect(formatLastSeen(NOW - 2 * HOUR, NOW)).toMatch(/^last seen today at /);
    expect(formatLastSeen(NOW - DAY, NOW)).toMatch(/^last seen yesterday at /);
    expect(formatLastSeen(NOW - 10 * DAY, NOW)).not.toMatch(/today|yesterday|ago/);
  });
});

describe("formatSize", () => {
  it("uses bytes, then KB, then MB", () => {
    expect(formatSize(512)).toBe("512 B");
    expect(formatSize(2048)).toBe("2 KB");
    expect(formatSize(3.5 * 1024 * 1024)).toBe("3.5 MB");
  });
});
