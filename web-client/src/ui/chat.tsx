// The open chat: header (presence, last seen, typing), the message list
// that pages back as you scroll up, and the composer.

import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";

import type { Client } from "../client";
import { formatDay, formatLastSeen } from "../format";
import { directPartner, displayName, otherMembers, roomName, tickOf, visibleItems, type Room, type TimelineItem } from "../store";
import { Avatar, PresenceDot, useClientVersion, useNow } from "./common";
import { ImageDialog, InviteDialog, LeaveDialog, MessageInfoDialog } from "./dialogs";
import { Message, noticeText } from "./message";

interface Props {
  client: Client;
  roomId: string;
  onBack: () => void;
}

type Dialog = { kind: "invite" } | { kind: "leave" } | { kind: "info"; eventId: string } | { kind: "image"; mxc: string; name: string };

export function ChatView({ client, roomId, onBack }: Props) {
  useClientVersion(client);
  const now = useNow(30_000);
  const [dialog, setDialog] = useState<Dialog | null>(null);
  const room = client.state.rooms[roomId];

  useReadReceipts(client, roomId);

  if (!room) {
    return (
      <section class="chat" aria-label="Chat">
        <ChatHeaderShell onBack={onBack} title="Opening chat…" />
        <div class="messages-empty">Waiting for the server…</div>
      </section>
    );
  }
  if (room.membership === "invite") {
    return (
      <section class="chat" aria-label="Chat">
        <ChatHeaderShell onBack={onBack} title={roomName(room, client.userId)} />
        <div class="messages-empty">Accept the invitation in the chat list to read this chat.</div>
      </section>
    );
  }

  const me = client.userId;
  const name = roomName(room, me);
  return (
    <section
      class="chat"
      aria-label={`Chat with ${name}`}
      onKeyDown={(e) => {
        // Escape leaves the chat for the list (dialogs handle their own).
        if (e.key === "Escape" && !dialog && !e.defaultPrevented) {
          e.preventDefault();
          onBack();
        }
      }}
    >
      <header class="chat-header">
        <button type="button" class="icon back" onClick={onBack} aria-label="Back to chats">
          <svg viewBox="0 0 24 24" aria-hidden="true">
            <path d="M20 11H7.8l5.6-5.6L12 4l-8 8 8 8 1.4-1.4L7.8 13H20z" />
          </svg>
        </button>
        <Avatar name={name} id={room.roomId} />
        <div class="chat-title">
          <h2>{name}</h2>
          <ChatSubtitle client={client} room={room} now={now} />
        </div>
        <button type="button" class="icon" onClick={() => setDialog({ kind: "invite" })} aria-label="Invite someone" title="Invite someone">
          <svg viewBox="0 0 24 24" aria-hidden="true">
            <path d="M15 12a4 4 0 1 0 0-8 4 4 0 0 0 0 8zm-9-2V7H4v3H1v2h3v3h2v-3h3v-2H6zm9 4c-2.7 0-8 1.3-8 4v2h16v-2c0-2.7-5.3-4-8-4z" />
          </svg>
        </button>
        <button type="button" class="icon" onClick={() => setDialog({ kind: "leave" })} aria-label="Leave chat" title="Leave chat">
          <svg viewBox="0 0 24 24" aria-hidden="true">
            <path d="M10 17l1.4-1.4L8.8 13H20v-2H8.8l2.6-2.6L10 7l-5 5 5 5zM4 5h7V3H4a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h7v-2H4V5z" />
          </svg>
        </button>
      </header>
      <MessageList
        client={client}
        room={room}
        now={now}
        onInfo={(eventId) => setDialog({ kind: "info", eventId })}
        onOpenImage={(mxc, n) => setDialog({ kind: "image", mxc, name: n })}
      />
      <TypingLine room={room} />
      <Composer client={client} roomId={room.roomId} />
      {dialog?.kind === "invite" && <InviteDialog client={client} roomId={room.roomId} onClose={() => setDialog(null)} />}
      {dialog?.kind === "leave" && <LeaveDialog client={client} roomId={room.roomId} name={name} onClose={() => setDialog(null)} />}
      {dialog?.kind === "info" && <MessageInfoDialog client={client} room={room} eventId={dialog.eventId} onClose={() => setDialog(null)} />}
      {dialog?.kind === "image" && <ImageDialog client={client} mxc={dialog.mxc} name={dialog.name} onClose={() => setDialog(null)} />}
    </section>
  );
}

function ChatHeaderShell({ onBack, title }: { onBack: () => void; title: string }) {
  return (
    <header class="chat-header">
      <button type="button" class="icon back" onClick={onBack} aria-label="Back to chats">
        <svg viewBox="0 0 24 24" aria-hidden="true">
          <path d="M20 11H7.8l5.6-5.6L12 4l-8 8 8 8 1.4-1.4L7.8 13H20z" />
        </svg>
      </button>
      <div class="chat-title">
        <h2>{title}</h2>
      </div>
    </header>
  );
}

/** One-on-one: the other person's presence or last seen; group: members. */
function ChatSubtitle({ client, room, now }: { client: Client; room: Room; now: number }) {
  const me = client.userId;
  const partner = directPartner(room, me);
  useEffect(() => {
    if (partner) client.ensurePresence(partner);
  }, [client, partner]);
  if (partner) {
    const presence = client.state.presence[partner];
    let text: string;
    if (room.members[partner]?.membership === "invite") text = "invited";
    else if (presence?.presence === "online") text = "online";
    else if (presence?.lastActiveTs !== undefined) text = (presence.presence === "unavailable" ? "away · " : "") + formatLastSeen(presence.lastActiveTs, now);
    else text = "offline";
    return (
      <p class="chat-subtitle" data-presence-text>
        <PresenceDot presence={presence} /> {text}
      </p>
    );
  }
  const others = otherMembers(room, me);
  const names = others.map((id) => displayName(room, id)).sort();
  return <p class="chat-subtitle">{others.length === 0 ? "Only you" : `You, ${names.join(", ")}`}</p>;
}

function TypingLine({ room }: { room: Room }) {
  const names = room.typing.map((id) => displayName(room, id));
  const text = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(" and ")} are typing…`;
  return (
    <div class="typing-line" aria-live="polite" data-typing={names.length > 0 ? "yes" : "no"}>
      {text}
    </div>
  );
}

/** Posts read receipts while the chat is on screen and the window focused. */
function useReadReceipts(client: Client, roomId: string) {
  const room = client.state.rooms[roomId];
  useEffect(() => {
    const check = () => {
      if (document.visibilityState === "visible" && document.hasFocus()) client.markRoomRead(roomId);
    };
    check();
    window.addEventListener("focus", check);
    document.addEventListener("visibilitychange", check);
    return () => {
      window.removeEventListener("focus", check);
      document.removeEventListener("visibilitychange", check);
    };
  }, [client, roomId, room?.version]);
}

function MessageList({
  client,
  room,
  now,
  onInfo,
  onOpenImage,
}: {
  client: Client;
  room: Room;
  now: number;
  onInfo: (eventId: string) => void;
  onOpenImage: (mxc: string, name: string) => void;
}) {
  const listRef = useRef<HTMLDivElement>(null);
  const atBottomRef = useRef(true);
  const anchorRef = useRef<{ height: number; top: number } | null>(null);
  const me = client.userId;
  const items = visibleItems(room);
  const paging = client.isPaginating(room.roomId);

  const loadOlder = () => {
    const el = listRef.current;
    if (!el || room.prevBatch === null || client.isPaginating(room.roomId)) return;
    anchorRef.current = { height: el.scrollHeight, top: el.scrollTop };
    client.paginate(room.roomId).catch(() => {
      anchorRef.current = null;
    });
  };

  // Keep the view where the reader is: at the bottom for new messages, on
  // the same message when older ones are added above.
  useLayoutEffect(() => {
    const el = listRef.current;
    if (!el) return;
    if (anchorRef.current && !client.isPaginating(room.roomId)) {
      el.scrollTop = anchorRef.current.top + (el.scrollHeight - anchorRef.current.height);
      anchorRef.current = null;
    } else if (atBottomRef.current) {
      el.scrollTop = el.scrollHeight;
    }
    // Not enough to fill the screen yet: fetch more.
    if (el.scrollHeight <= el.clientHeight + 40 && room.prevBatch !== null && !client.isPaginating(room.roomId)) loadOlder();
  });

  const onScroll = () => {
    const el = listRef.current!;
    atBottomRef.current = el.scrollHeight - el.scrollTop - el.clientHeight < 60;
    if (el.scrollTop < 300) loadOlder();
  };

  const rows: preact.JSX.Element[] = [];
  let lastDay = "";
  let lastSender = "";
  const group = otherMembers(room, me).length > 1 || !directPartner(room, me);
  for (const item of items) {
    const day = formatDay(item.ts, now);
    if (day !== lastDay) {
      rows.push(
        <li class="day" key={`day-${item.ts}`} role="presentation">
          <span>{day}</span>
        </li>,
      );
      lastDay = day;
      lastSender = "";
    }
    const key = item.txnId ?? item.eventId ?? String(item.ts);
    if (item.type === "m.room.message") {
      rows.push(
        <Message
          key={key}
          client={client}
          room={room}
          item={item}
          tick={item.sender === me ? tickOf(room, item, me) : undefined}
          showSender={group && item.sender !== lastSender}
          onInfo={onInfo}
          onOpenImage={onOpenImage}
        />,
      );
      lastSender = item.sender;
    } else {
      // The creator's own join right after "created the chat" says nothing new.
      const previous = items[items.indexOf(item) - 1];
      if (item.type === "m.room.member" && previous?.type === "m.room.create" && previous.sender === item.stateKey) continue;
      const text = noticeText(room, item as TimelineItem, me);
      if (text) {
        rows.push(
          <li class="notice" key={key}>
            <span>{text}</span>
          </li>,
        );
        lastSender = "";
      }
    }
  }

  return (
    <div class="messages" ref={listRef} onScroll={onScroll} tabIndex={0} role="log" aria-label="Messages">
      <div class="history-edge">
        {room.prevBatch === null ? (
          <span>Start of the conversation</span>
        ) : (
          <button type="button" class="link" onClick={loadOlder} disabled={paging}>
            {paging ? "Loading…" : "Load older messages"}
          </button>
        )}
      </div>
      <ol class="message-list">{rows}</ol>
    </div>
  );
}

function Composer({ client, roomId }: { client: Client; roomId: string }) {
  const [text, setText] = useState("");
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const fileRef = useRef<HTMLInputElement>(null);

  useEffect(() => {
    inputRef.current?.focus();
  }, [roomId]);

  // Grow with the text, up to the CSS max-height.
  useLayoutEffect(() => {
    const el = inputRef.current;
    if (!el) return;
    el.style.height = "auto";
    el.style.height = `${el.scrollHeight + 2}px`;
  }, [text]);

  const send = () => {
    const body = text.trim();
    if (!body) return;
    client.sendText(roomId, body);
    setText("");
    inputRef.current?.focus();
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  };

  const onFiles = (e: Event) => {
    const target = e.currentTarget as HTMLInputElement;
    for (const f of Array.from(target.files ?? [])) void client.sendFile(roomId, f);
    target.value = "";
    inputRef.current?.focus();
  };

  return (
    <form
      class="composer"
      onSubmit={(e) => {
        e.preventDefault();
        send();
      }}
    >
      <input ref={fileRef} type="file" multiple class="visually-hidden" tabIndex={-1} aria-hidden="true" onChange={onFiles} data-testid="file-input" />
      <button type="button" class="icon" onClick={() => fileRef.current?.click()} aria-label="Attach a file or image" title="Attach">
        <svg viewBox="0 0 24 24" aria-hidden="true">
          <path d="M16.5 6v11.5a4 4 0 0 1-8 0V5a2.5 2.5 0 0 1 5 0v10.5a1 1 0 0 1-2 0V6H10v9.5a2.5 2.5 0 0 0 5 0V5a4 4 0 0 0-8 0v12.5a5.5 5.5 0 0 0 11 0V6h-1.5z" />
        </svg>
      </button>
      <textarea
        ref={inputRef}
        rows={1}
        aria-label="Message"
        placeholder="Type a message"
        value={text}
        onInput={(e) => {
          const value = e.currentTarget.value;
          setText(value);
          client.noteTyping(roomId, value.trim() !== "");
        }}
        onKeyDown={onKeyDown}
        onBlur={() => client.stopTyping()}
      />
      <button type="submit" class="icon send" aria-label="Send" title="Send" disabled={text.trim() === ""}>
        <svg viewBox="0 0 24 24" aria-hidden="true">
          <path d="M2 21 23 12 2 3v7l15 2-15 2z" />
        </svg>
      </button>
    </form>
  );
}
