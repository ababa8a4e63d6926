// Desktop notifications: a new message from someone else while the tab is
// hidden shows one (once the person has allowed them); a click on it brings
// the window forward and opens the chat.

import { useEffect } from "preact/hooks";

import type { Client } from "../client";
import { messageSummary } from "../format";
import { displayName, roomName, type Arrival, type Room, type TimelineItem } from "../store";

/** What a message's notification says: who sent it (and in which chat,
 *  unless the chat is named after them) and the message in one line. */
export function notificationText(room: Room, event: TimelineItem, me: string): { title: string; body: string } {
  const sender = displayName(room, event.sender);
  const name = roomName(room, me);
  return { title: name === sender ? sender : `${sender} in ${name}`, body: messageSummary(event.content) };
}

function notify(client: Client, arrivals: Arrival[], onOpen: (roomId: string) => void): void {
  if (!document.hidden) return;
  if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
  for (const { roomId, event } of arrivals) {
    const room = client.state.rooms[roomId];
    if (!room) continue;
    const { title, body } = notificationText(room, event, client.userId);
    const notification = new Notification(title, { body, tag: roomId });
    notification.onclick = () => {
      window.focus();
      onOpen(roomId);
      notification.close();
    };
  }
}

/** Shows a notification for each new message while the view is mounted. */
export function useDesktopNotifications(client: Client, onOpen: (roomId: string) => void): void {
  useEffect(() => client.onArrivals((arrivals) => notify(client, arrivals, onOpen)), [client, onOpen]);
}
