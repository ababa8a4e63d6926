// One line of the chat: a message bubble (text, image, file) with its time
// and, for our own, its tick; or a small notice for a membership change.

import { useState } from "preact/hooks";

import type { Client } from "../client";
import { formatSize, formatTime } from "../format";
import { mediaUrl, useMediaUrl } from "../media";
import { displayName, type Room, type Tick, type TimelineItem } from "../store";

const TICK_LABEL: Record<Tick, string> = {
  sending: "Sending",
  failed: "Not sent",
  sent: "Sent",
  delivered: "Delivered",
  read: "Read",
};

export function TickMark({ tick }: { tick: Tick }) {
  let path: preact.JSX.Element;
  if (tick === "sending") {
    path = <path d="M12 4a8 8 0 1 0 0 16 8 8 0 0 0 0-16zm0 2a6 6 0 1 1 0 12 6 6 0 0 1 0-12zm-1 2v5l4 2.4.8-1.3-3.3-2V8z" />;
  } else if (tick === "failed") {
    path = <path d="M12 3 1 21h22L12 3zm1 15h-2v-2h2v2zm0-4h-2v-4h2v4z" />;
  } else if (tick === "sent") {
    path = <path d="M9 16.2 4.8 12l-1.4 1.4L9 19 21 7l-1.4-1.4z" />;
  } else {
    path = <path d="M.4 13.4 6 19l1.4-1.4L1.8 12zM22.2 5.6 11.6 16.2 7.4 12 6 13.4l5.6 5.6 12-12zM18 7l-1.4-1.4-6.3 6.3 1.4 1.4z" />;
  }
  return (
    <span class={`tick ${tick}`} role="img" aria-label={TICK_LABEL[tick]} title={TICK_LABEL[tick]} data-tick={tick}>
      <svg viewBox="0 0 24 24" aria-hidden="true">
        {path}
      </svg>
    </span>
  );
}

/** Fits an image of w×h into at most max×max, keeping its shape. */
function fit(w: number | undefined, h: number | undefined, max: number): { width: number; height: number } {
  if (!w || !h) return { width: max, height: Math.round(max * 0.75) };
  const scale = Math.min(1, max / Math.max(w, h));
  return { width: Math.max(1, Math.round(w * scale)), height: Math.max(1, Math.round(h * scale)) };
}

function ImageBody({ client, item, onOpen }: { client: Client; item: TimelineItem; onOpen: (mxc: string, name: string) => void }) {
  const info = (item.content.info ?? {}) as { w?: number; h?: number };
  const mxc = typeof item.content.url === "string" ? item.content.url : undefined;
  const name = typeof item.content.body === "string" ? item.content.body : "Image";
  const box = fit(info.w, info.h, 280);
  // Thumbnails at twice the shown size for sharp screens; our own images show
  // from the local file and need no download.
  const thumb = useMediaUrl(client.api, item.localUrl ? undefined : mxc, { width: box.width * 2, height: box.height * 2 });
  const src = item.localUrl ?? thumb.url;
  return (
    <button type="button" class="image-button" onClick={() => mxc && onOpen(mxc, name)} disabled={!mxc} aria-label={`Open image ${name}`}>
      {src ? (
        <img class="message-image" src={src} alt={name} width={box.width} height={box.height} />
      ) : (
        <span class="image-placeholder" style={{ width: `${box.width}px`, height: `${box.height}px` }}>
          {thumb.failed ? "Image unavailable" : "Loading image…"}
        </span>
      )}
    </button>
  );
}

function FileBody({ client, item }: { client: Client; item: TimelineItem }) {
  const [busy, setBusy] = useState(false);
  const mxc = typeof item.content.url === "string" ? item.content.url : undefined;
  const name = String(item.content.filename ?? item.content.body ?? "file");
  const size = (item.content.info as { size?: number } | undefined)?.size;
  const download = async () => {
    if (!mxc) return;
    setBusy(true);
    try {
      const url = await mediaUrl(client.api, mxc);
      const a = document.createElement("a");
      a.href = url;
      a.download = name;
      a.click();
    } finally {
      setBusy(false);
    }
  };
  return (
    <button type="button" class="file-button" onClick={download} disabled={!mxc || busy} aria-label={`Download ${name}`}>
      <svg viewBox="0 0 24 24" aria-hidden="true">
        <path d="M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8l-6-6zm-1 7V3.5L18.5 9H13z" />
      </svg>
      <span class="file-name">{name}</span>
      {size !== undefined && <span class="file-size">{formatSize(size)}</span>}
    </button>
  );
}

interface MessageProps {
  client: Client;
  room: Room;
  item: TimelineItem;
  tick?: Tick;
  showSender: boolean;
  onInfo: (eventId: string) => void;
  onOpenImage: (mxc: string, name: string) => void;
}

export function Message({ client, room, item, tick, showSender, onInfo, onOpenImage }: MessageProps) {
  const own = item.sender === client.userId;
  const msgtype = item.content.msgtype;
  const body = typeof item.content.body === "string" ? item.content.body : "";
  let content: preact.JSX.Element;
  if (msgtype === "m.image") content = <ImageBody client={client} item={item} onOpen={onOpenImage} />;
  else if (msgtype === "m.file" || msgtype === "m.video" || msgtype === "m.audio") content = <FileBody client={client} item={item} />;
  else if (msgtype === "m.emote")
    content = (
      <p class="text emote">
        * {displayName(room, item.sender)} {body}
      </p>
    );
  else if (typeof item.content.body === "string") content = <p class="text">{body}</p>;
  else content = <p class="text deleted">Message deleted</p>;

  return (
    <li class={`message ${own ? "own" : "other"}`} data-event-id={item.eventId} data-txn-id={item.txnId} data-sender={item.sender}>
      <div class="bubble">
        {showSender && !own && <span class="sender">{displayName(room, item.sender)}</span>}
        {content}
        {item.progress !== undefined && item.pending === "sending" && (
          <progress class="upload-progress" max={1} value={item.progress} aria-label={`Uploading ${body}`} />
        )}
        <span class="meta">
          <time dateTime={new Date(item.ts).toISOString()}>{formatTime(item.ts)}</time>
          {own && tick && <TickMark tick={tick} />}
        </span>
      </div>
      {own && item.pending === "failed" && item.txnId && (
        <div class="failed-actions">
          <span>Not sent.</span>
          <button type="button" class="link" onClick={() => client.retry(room.roomId, item.txnId!)}>
            Retry
          </button>
          <button type="button" class="link" onClick={() => client.discard(room.roomId, item.txnId!)}>
            Delete
          </button>
        </div>
      )}
      {own && item.eventId && !item.pending && (
        <button type="button" class="icon info-button" onClick={() => onInfo(item.eventId!)} aria-label="Message info" title="Message info">
          <svg viewBox="0 0 24 24" aria-hidden="true">
            <path d="M11 7h2v2h-2zm0 4h2v6h-2zm1-9a10 10 0 1 0 0 20 10 10 0 0 0 0-20zm0 18a8 8 0 1 1 0-16 8 8 0 0 1 0 16z" />
          </svg>
        </button>
      )}
    </li>
  );
}

/** A membership or room change, as a centred line; null for events not shown. */
export function noticeText(room: Room, item: TimelineItem, me: string): string | null {
  const who = item.sender === me ? "You" : displayName(room, item.sender);
  switch (item.type) {
    case "m.room.create":
      return `${who} created the chat`;
    case "m.room.name":
      return typeof item.content.name === "string" && item.content.name ? `${who} named the group “${item.content.name}”` : null;
    case "m.room.encryption":
      return `${who} turned on end-to-end encryption`;
    case "m.room.encrypted":
      // This client holds no keys: say what the message is rather than
      // show ciphertext, and where it can be read.
      return `🔒 ${who} sent an encrypted message: read it in an app that encrypts, such as Element`;
    case "m.room.member": {
      const target = item.stateKey === me ? "you" : displayName(room, item.stateKey ?? "");
      switch (item.content.membership) {
        case "join":
          return `${item.stateKey === me ? "You" : target} joined`;
        case "invite":
          return `${who} invited ${target}`;
        case "leave":
          return item.stateKey === item.sender ? `${who} left` : `${who} removed ${target}`;
        case "ban":
          return `${who} banned ${target}`;
        default:
          return null;
      }
    }
    default:
      return null;
  }
}
