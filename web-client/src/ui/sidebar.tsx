// The chat list: invites to accept, then chats by latest activity, each
// with its last message, unread count and (one-on-one) presence dot.

import { useEffect, useState } from "preact/hooks";

import type { Client } from "../client";
import { formatListTime, messageSummary } from "../format";
import { directPartner, displayName, lastMessage, roomName, sortedRooms, type Room } from "../store";
import { Avatar, PresenceDot, useNow } from "./common";
import { NewChatDialog, NewGroupDialog } from "./dialogs";

interface Props {
  client: Client;
  selected: string | null;
  onOpen: (roomId: string) => void;
  onLogOut: () => void;
}

export function Sidebar({ client, selected, onOpen, onLogOut }: Props) {
  const [dialog, setDialog] = useState<"chat" | "group" | null>(null);
  const [permission, setPermission] = useState(() => (typeof Notification === "undefined" ? "denied" : Notification.permission));
  const now = useNow(60_000);
  const rooms = sortedRooms(client.state);
  const me = client.userId;

  const askNotifications = async () => {
    setPermission(await Notification.requestPermission());
  };

  /** Up and down arrows move between chats. */
  const onListKey = (e: KeyboardEvent) => {
    if (e.key !== "ArrowDown" && e.key !== "ArrowUp") return;
    const buttons = Array.from((e.currentTarget as HTMLElement).querySelectorAll<HTMLElement>(".room-open"));
    const at = buttons.indexOf(document.activeElement as HTMLElement);
    if (at < 0) return;
    e.preventDefault();
    buttons[Math.max(0, Math.min(buttons.length - 1, at + (e.key === "ArrowDown" ? 1 : -1)))]?.focus();
  };

  return (
    <aside class="sidebar" aria-label="Chats">
      <header class="sidebar-header">
        <Avatar name={displayName(undefined, me)} id={me} size={36} />
        <div class="me">
          <span class="me-name">{displayName(undefined, me)}</span>
          <span class={`sync-status ${client.status}`} role="status" data-sync-status={client.status}>
            {client.status === "live" ? me : client.status === "connecting" ? "Connecting…" : "Reconnecting…"}
          </span>
        </div>
        {permission === "default" && (
          <button type="button" class="icon" onClick={askNotifications} aria-label="Turn on desktop notifications" title="Turn on desktop notifications">
            <svg viewBox="0 0 24 24" aria-hidden="true">
              <path d="M12 22a2 2 0 0 0 2-2h-4a2 2 0 0 0 2 2zm6-6v-5c0-3.1-1.6-5.6-4.5-6.3V4a1.5 1.5 0 0 0-3 0v.7C7.6 5.4 6 7.9 6 11v5l-2 2v1h16v-1l-2-2z" />
            </svg>
          </button>
        )}
        <button type="button" class="icon" onClick={onLogOut} aria-label="Log out" title="Log out">
          <svg viewBox="0 0 24 24" aria-hidden="true">
            <path d="M10 17l1.4-1.4L8.8 13H20v-2H8.8l2.6-2.6L10 7l-5 5 5 5zM4 5h7V3H4a2 2 0 0 0-2 2v14a2 2 0 0 0 2 2h7v-2H4V5z" />
          </svg>
        </button>
      </header>
      <div class="sidebar-actions">
        <button type="button" onClick={() => setDialog("chat")}>
          New chat
        </button>
        <button type="button" onClick={() => setDialog("group")}>
          New group
        </button>
      </div>
      {rooms.length === 0 ? (
        <p class="no-rooms">{client.ready ? "No chats yet. Start one with New chat." : "Loading…"}</p>
      ) : (
        <ul class="room-list" aria-label="Chat list" onKeyDown={onListKey}>
          {rooms.map((room) =>
            room.membership === "invite" ? (
              <InviteItem key={room.roomId} client={client} room={room} onOpen={onOpen} />
            ) : (
              <RoomItem key={room.roomId} client={client} room={room} selected={room.roomId === selected} onOpen={onOpen} now={now} />
            ),
          )}
        </ul>
      )}
      {dialog === "chat" && <NewChatDialog client={client} onClose={() => setDialog(null)} onCreated={onOpen} />}
      {dialog === "group" && <NewGroupDialog client={client} onClose={() => setDialog(null)} onCreated={onOpen} />}
    </aside>
  );
}

function RoomItem({ client, room, selected, onOpen, now }: { client: Client; room: Room; selected: boolean; onOpen: (id: string) => void; now: number }) {
  const me = client.userId;
  const name = roomName(room, me);
  const partner = directPartner(room, me);
  const last = lastMessage(room);
  let preview = "";
  if (last?.type === "m.room.message") {
    const who = last.sender === me ? "You" : partner ? "" : displayName(room, last.sender);
    preview = (who ? `${who}: ` : "") + messageSummary(last.content);
  } else if (last?.type === "m.room.encrypted") {
    const who = last.sender === me ? "You" : partner ? "" : displayName(room, last.sender);
    preview = (who ? `${who}: ` : "") + "🔒 Encrypted message";
  }
  useEffect(() => {
    if (partner) client.ensurePresence(partner);
  }, [client, partner]);
  const typing = room.typing.length > 0;
  const label = [name, room.unread > 0 ? `${room.unread} unread` : "", typing ? "typing" : preview].filter(Boolean).join(", ");
  return (
    <li class={`room-item ${selected ? "selected" : ""}`} data-room-id={room.roomId}>
      <button type="button" class="room-open" aria-current={selected ? "true" : undefined} aria-label={label} onClick={() => onOpen(room.roomId)}>
        <span class="avatar-wrap">
          <Avatar name={name} id={room.roomId} />
          {partner && <PresenceDot presence={client.state.presence[partner]} />}
        </span>
        <span class="room-text">
          <span class="room-top">
            <span class="room-name">{name}</span>
            {last && <span class="room-time">{formatListTime(last.ts, now)}</span>}
          </span>
          <span class="room-bottom">
            <span class={`room-preview ${typing ? "typing" : ""}`}>{typing ? "typing…" : preview}</span>
            {room.unread > 0 && (
              <span class={`unread ${room.highlight > 0 ? "highlight" : ""}`} data-unread={room.unread}>
                {room.unread}
              </span>
            )}
          </span>
        </span>
      </button>
    </li>
  );
}

function InviteItem({ client, room, onOpen }: { client: Client; room: Room; onOpen: (id: string) => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const name = roomName(room, client.userId);
  const act = async (accept: boolean) => {
    setBusy(true);
    setError(null);
    try {
      if (accept) {
        await client.acceptInvite(room.roomId);
        onOpen(room.roomId);
      } else {
        await client.declineInvite(room.roomId);
      }
    } catch (e) {
      setError(e instanceof Error ? e.message : String(e));
      setBusy(false);
    }
  };
  return (
    <li class="room-item invite" data-room-id={room.roomId}>
      <div class="invite-body">
        <Avatar name={name} id={room.roomId} />
        <span class="room-text">
          <span class="room-name">{name}</span>
          <span class="room-preview">
            {room.inviter ? `${displayName(room, room.inviter)} invited you` : "Invitation"}
            {room.isDirect ? " to chat" : " to a group"}
          </span>
        </span>
      </div>
      <div class="invite-actions">
        <button type="button" class="primary" disabled={busy} onClick={() => act(true)} aria-label={`Accept invitation to ${name}`}>
          Accept
        </button>
        <button type="button" disabled={busy} onClick={() => act(false)} aria-label={`Decline invitation to ${name}`}>
          Decline
        </button>
      </div>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
    </li>
  );
}
