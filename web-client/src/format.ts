// Times, sizes and messages as people read them.

const time = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const weekday = new Intl.DateTimeFormat(undefined, { weekday: "short" });
const date = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", year: "numeric" });
const dateTime = new Intl.DateTimeFormat(undefined, { day: "numeric", month: "short", hour: "2-digit", minute: "2-digit" });

function startOfDay(ts: number): number {
  const d = new Date(ts);
  d.setHours(0, 0, 0, 0);
  return d.getTime();
}

export function formatTime(ts: number): string {
  return time.format(ts);
}

/** For the room list: the time today, the weekday this week, else the date. */
export function formatListTime(ts: number, now: number): string {
  const days = Math.round((startOfDay(now) - startOfDay(ts)) / 86_400_000);
  if (days <= 0) return time.format(ts);
  if (days === 1) return "Yesterday";
  if (days < 7) return weekday.format(ts);
  return date.format(ts);
}

/** Day separators in a chat. */
export function formatDay(ts: number, now: number): string {
  const days = Math.round((startOfDay(now) - startOfDay(ts)) / 86_400_000);
  if (days <= 0) return "Today";
  if (days === 1) return "Yesterday";
  return date.format(ts);
}

export function formatDateTime(ts: number): string {
  return dateTime.format(ts);
}

export function formatLastSeen(ts: number, now: number): string {
  const ago = Math.max(0, now - ts);
  if (ago < 60_000) return "last seen just now";
  if (ago < 3_600_000) return `last seen ${Math.floor(ago / 60_000)} min ago`;
  const days = Math.round((startOfDay(now) - startOfDay(ts)) / 86_400_000);
  if (days <= 0) return `last seen today at ${time.format(ts)}`;
  if (days === 1) return `last seen yesterday at ${time.format(ts)}`;
  return `last seen ${date.format(ts)}`;
}

export function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

const MEDIA_KIND: Record<string, string> = { "m.image": "Photo", "m.file": "File", "m.video": "Video", "m.audio": "Audio" };

/** A one-line text for a message's content (room list, notifications). */
export function messageSummary(content: Record<string, unknown>): string {
  const body = typeof content.body === "string" ? content.body : "";
  const kind = MEDIA_KIND[String(content.msgtype)];
  return kind ? `${kind}: ${body}` : body;
}
