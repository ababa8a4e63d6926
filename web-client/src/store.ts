// The client's picture of the account: rooms, timelines, receipts, typing,
// presence and invites, built by applying /sync responses (one per SSE
// event), /messages pages and local echoes of our own sends.
//
// Pure: no network, no DOM, no clock (callers pass `now`), so it is unit
// tested on its own (test/store.test.ts). Functions mutate the state they are
// given; the UI re-renders after each change.

export interface MatrixEvent {
  event_id: string;
  type: string;
  sender: string;
  origin_server_ts: number;
  content: Record<string, unknown>;
  state_key?: string;
  unsigned?: { transaction_id?: string; age?: number; redacted_because?: unknown };
}

/** A stripped state event of an invite (no id, no timestamp). */
export interface StrippedEvent {
  type: string;
  sender: string;
  state_key: string;
  content: Record<string, unknown>;
}

export interface EphemeralEvent {
  type: string;
  content: Record<string, unknown>;
}

export interface JoinedRoomSync {
  state?: { events?: MatrixEvent[] };
  timeline?: { events?: MatrixEvent[]; limited?: boolean; prev_batch?: string };
  ephemeral?: { events?: EphemeralEvent[] };
  unread_notifications?: { notification_count?: number; highlight_count?: number };
}

export interface SyncResponse {
  next_batch: string;
  rooms?: {
    join?: Record<string, JoinedRoomSync>;
    invite?: Record<string, { invite_state?: { events?: StrippedEvent[] } }>;
    leave?: Record<string, unknown>;
  };
  presence?: { events?: { type: string; sender: string; content: Record<string, unknown> }[] };
}

export interface MessagesResponse {
  chunk: MatrixEvent[];
  start?: string;
  end?: string;
}

/** Where our own message is on its way: WhatsApp's clock, one grey tick,
 *  two grey ticks, two blue ticks (and a failure mark). */
export type Tick = "sending" | "failed" | "sent" | "delivered" | "read";

export interface TimelineItem {
  /** Missing while a local echo waits for the server's answer. */
  eventId?: string;
  /** Our own sends' transaction id: the key that matches an echo to its event. */
  txnId?: string;
  type: string;
  sender: string;
  ts: number;
  content: Record<string, unknown>;
  stateKey?: string;
  /** Local echoes only. */
  pending?: "sending" | "failed";
  /** Upload progress of a local echo, 0..1. */
  progress?: number;
  /** A local preview (object URL) of an image being uploaded. */
  localUrl?: string;
}

export interface Member {
  membership: string;
  displayname?: string;
}

export interface UserReceipts {
  read?: { eventId: string; ts: number };
  delivered?: { eventId: string; ts: number };
}

export interface Room {
  roomId: string;
  membership: "join" | "invite";
  name?: string;
  members: Record<string, Member>;
  /** Events from the server, oldest first, each once. */
  timeline: TimelineItem[];
  /** Our sends not yet seen in the timeline, in send order. */
  echoes: TimelineItem[];
  /** Token to page further back; null once the start of the room is reached. */
  prevBatch: string | null;
  unread: number;
  highlight: number;
  /** Users typing now, without ourselves. */
  typing: string[];
  receipts: Record<string, UserReceipts>;
  /** Invites: who invited us, and whether they marked it a direct chat. */
  inviter?: string;
  isDirect: boolean;
  /** Bumped on every change of the room (for memoised views). */
  version: number;
}

export interface Presence {
  presence: string;
  /** When the user was last active (our clock), if known. */
  lastActiveTs?: number;
  currentlyActive: boolean;
  statusMsg?: string;
}

export interface ClientState {
  userId: string;
  rooms: Record<string, Room>;
  presence: Record<string, Presence>;
  /** The last sync applied; undefined before the first. */
  nextBatch?: string;
}

/** A new message from someone else, as a desktop notification shows it. */
export interface Arrival {
  roomId: string;
  event: TimelineItem;
}

export function createState(userId: string): ClientState {
  return { userId, rooms: {}, presence: {} };
}

function newRoom(roomId: string, membership: Room["membership"]): Room {
  return {
    roomId,
    membership,
    members: {},
    timeline: [],
    echoes: [],
    prevBatch: null,
    unread: 0,
    highlight: 0,
    typing: [],
    receipts: {},
    isDirect: false,
    version: 0,
  };
}

function toItem(event: MatrixEvent): TimelineItem {
  const item: TimelineItem = {
    eventId: event.event_id,
    type: event.type,
    sender: event.sender,
    ts: event.origin_server_ts,
    content: event.content ?? {},
  };
  if (event.state_key !== undefined) item.stateKey = event.state_key;
  if (event.unsigned?.transaction_id) item.txnId = event.unsigned.transaction_id;
  return item;
}

function applyStateEvent(room: Room, event: { type: string; state_key?: string; content: Record<string, unknown> }): void {
  if (event.state_key === undefined) return;
  if (event.type === "m.room.member") {
    const content = event.content as { membership?: string; displayname?: string; is_direct?: boolean };
    room.members[event.state_key] = {
      membership: content.membership ?? "leave",
      displayname: typeof content.displayname === "string" ? content.displayname : undefined,
    };
    if (content.is_direct) room.isDirect = true;
  } else if (event.type === "m.room.name") {
    const name = (event.content as { name?: unknown }).name;
    room.name = typeof name === "string" && name !== "" ? name : undefined;
  }
}

function indexOfEvent(room: Room, eventId: string): number {
  for (let i = room.timeline.length - 1; i >= 0; i--) {
    if (room.timeline[i].eventId === eventId) return i;
  }
  return -1;
}

/** Is receipt `a` past receipt `b`? By timeline position where both events
 *  are loaded, else by timestamp (receipts only move forward). */
function isLater(room: Room, a: { eventId: string; ts: number }, b: { eventId: string; ts: number } | undefined): boolean {
  if (!b) return true;
  if (a.eventId === b.eventId) return false;
  const ia = indexOfEvent(room, a.eventId);
  const ib = indexOfEvent(room, b.eventId);
  if (ia >= 0 && ib >= 0) return ia > ib;
  return a.ts >= b.ts;
}

function applyReceipts(room: Room, content: Record<string, unknown>): void {
  for (const [eventId, byType] of Object.entries(content)) {
    if (!byType || typeof byType !== "object") continue;
    for (const [type, byUser] of Object.entries(byType as Record<string, unknown>)) {
      const kind = type === "m.read" ? "read" : type === "tern.delivered" ? "delivered" : null;
      if (!kind || !byUser || typeof byUser !== "object") continue;
      for (const [userId, info] of Object.entries(byUser as Record<string, { ts?: number }>)) {
        const receipt = { eventId, ts: typeof info?.ts === "number" ? info.ts : 0 };
        const mine = (room.receipts[userId] ??= {});
        if (isLater(room, receipt, mine[kind])) mine[kind] = receipt;
      }
    }
  }
}

/** Adds server events to the end of a room's timeline, each once. Returns
 *  those that were new. Echoes they answer leave the echo list. */
function appendEvents(room: Room, events: MatrixEvent[]): TimelineItem[] {
  const known = new Set(room.timeline.map((item) => item.eventId));
  const added: TimelineItem[] = [];
  for (const event of events) {
    if (!event.event_id || known.has(event.event_id)) continue;
    known.add(event.event_id);
    const item = toItem(event);
    const echo = room.echoes.findIndex((e) => e.eventId === event.event_id || (item.txnId !== undefined && e.txnId === item.txnId));
    if (echo >= 0) {
      item.txnId ??= room.echoes[echo].txnId;
      if (room.echoes[echo].localUrl) item.localUrl = room.echoes[echo].localUrl;
      room.echoes.splice(echo, 1);
    }
    room.timeline.push(item);
    added.push(item);
  }
  return added;
}

/** Applies one /sync response. Returns the new messages from others, for
 *  notifications (none for the first sync: that is history, not news). */
export function applySync(state: ClientState, sync: SyncResponse, now: number): Arrival[] {
  const firstSync = state.nextBatch === undefined;
  const arrivals: Arrival[] = [];

  for (const [roomId, joined] of Object.entries(sync.rooms?.join ?? {})) {
    let room = state.rooms[roomId];
    if (!room || room.membership !== "join") {
      const invite = room;
      room = newRoom(roomId, "join");
      if (invite) room.isDirect = invite.isDirect;
      state.rooms[roomId] = room;
    }
    for (const event of joined.state?.events ?? []) applyStateEvent(room, event);

    const timeline = joined.timeline ?? {};
    const events = timeline.events ?? [];
    if (timeline.limited) {
      // A gap between what we hold and these events: start over from here
      // (echoes stay), and history pages back from the new edge.
      room.timeline = [];
    }
    if (room.timeline.length === 0) {
      room.prevBatch = timeline.prev_batch ?? null;
    }
    for (const item of appendEvents(room, events)) {
      if (item.stateKey !== undefined) applyStateEvent(room, { type: item.type, state_key: item.stateKey, content: item.content });
      if (item.sender !== state.userId) {
        room.typing = room.typing.filter((u) => u !== item.sender);
        if (!firstSync && item.type === "m.room.message") arrivals.push({ roomId, event: item });
      }
    }

    for (const ephemeral of joined.ephemeral?.events ?? []) {
      if (ephemeral.type === "m.typing") {
        const ids = (ephemeral.content as { user_ids?: unknown }).user_ids;
        room.typing = Array.isArray(ids) ? ids.filter((u): u is string => typeof u === "string" && u !== state.userId) : [];
      } else if (ephemeral.type === "m.receipt") {
        applyReceipts(room, ephemeral.content);
      }
    }

    const counts = joined.unread_notifications;
    if (counts) {
      room.unread = counts.notification_count ?? 0;
      room.highlight = counts.highlight_count ?? 0;
    }
    // Nothing can be unread after our read receipt at the newest event.
    // (Tern's SSE stream has been seen to send a stale count right after
    // our own m.read; see web-client/README.md, "Known server issues".)
    const latest = room.timeline[room.timeline.length - 1];
    if (latest?.eventId && room.receipts[state.userId]?.read?.eventId === latest.eventId) {
      room.unread = 0;
      room.highlight = 0;
    }
    room.version++;
  }

  for (const [roomId, invited] of Object.entries(sync.rooms?.invite ?? {})) {
    if (state.rooms[roomId]?.membership === "join") continue;
    const room = newRoom(roomId, "invite");
    for (const event of invited.invite_state?.events ?? []) {
      applyStateEvent(room, event);
      if (event.type === "m.room.member" && event.state_key === state.userId) {
        room.inviter = event.sender;
        room.isDirect = (event.content as { is_direct?: boolean }).is_direct === true;
      }
    }
    room.version++;
    state.rooms[roomId] = room;
  }

  for (const roomId of Object.keys(sync.rooms?.leave ?? {})) {
    delete state.rooms[roomId];
  }

  for (const event of sync.presence?.events ?? []) {
    if (event.type === "m.presence") applyPresence(state, event.sender, event.content, now);
  }

  state.nextBatch = sync.next_batch;
  return arrivals;
}

/** Records a user's presence: an m.presence event's content, or the answer
 *  of GET /presence/{userId}/status. */
export function applyPresence(state: ClientState, userId: string, content: Record<string, unknown>, now: number): void {
  const c = content as { presence?: string; last_active_ago?: number; currently_active?: boolean; status_msg?: string };
  state.presence[userId] = {
    presence: c.presence ?? "offline",
    lastActiveTs: typeof c.last_active_ago === "number" ? now - c.last_active_ago : undefined,
    currentlyActive: c.currently_active === true,
    statusMsg: typeof c.status_msg === "string" ? c.status_msg : undefined,
  };
}

/** Adds a page of older events (a /messages response with dir=b) to the
 *  start of a room's timeline, each once. */
export function applyMessages(state: ClientState, roomId: string, page: MessagesResponse): void {
  const room = state.rooms[roomId];
  if (!room) return;
  const known = new Set(room.timeline.map((item) => item.eventId));
  const older: TimelineItem[] = [];
  for (const event of page.chunk) {
    if (!event.event_id || known.has(event.event_id)) continue;
    known.add(event.event_id);
    older.push(toItem(event));
  }
  older.reverse();
  room.timeline = older.concat(room.timeline);
  room.prevBatch = page.end && page.chunk.length > 0 ? page.end : null;
  room.version++;
}

/** Shows our message at once, before the server has it. */
export function addEcho(state: ClientState, roomId: string, echo: Omit<TimelineItem, "sender" | "pending">): void {
  const room = state.rooms[roomId];
  if (!room) return;
  room.echoes.push({ ...echo, sender: state.userId, pending: "sending" });
  room.version++;
}

/** Updates an echo (progress, content after upload, failure, retry). */
export function updateEcho(state: ClientState, roomId: string, txnId: string, change: Partial<TimelineItem>): void {
  const room = state.rooms[roomId];
  const echo = room?.echoes.find((e) => e.txnId === txnId);
  if (!room || !echo) return;
  Object.assign(echo, change);
  room.version++;
}

/** The server took our send: the echo now has its event id (and a tick),
 *  unless the event already arrived through sync. */
export function confirmEcho(state: ClientState, roomId: string, txnId: string, eventId: string): void {
  const room = state.rooms[roomId];
  if (!room) return;
  const index = room.echoes.findIndex((e) => e.txnId === txnId);
  if (index < 0) return;
  if (indexOfEvent(room, eventId) >= 0) {
    room.echoes.splice(index, 1);
  } else {
    room.echoes[index].eventId = eventId;
    delete room.echoes[index].pending;
  }
  room.version++;
}

export function removeEcho(state: ClientState, roomId: string, txnId: string): void {
  const room = state.rooms[roomId];
  if (!room) return;
  room.echoes = room.echoes.filter((e) => e.txnId !== txnId);
  room.version++;
}

/** The room as the user sees it: server events, then our unanswered sends. */
export function visibleItems(room: Room): TimelineItem[] {
  return room.echoes.length === 0 ? room.timeline : room.timeline.concat(room.echoes);
}

/** Joined members other than `userId`. */
export function otherMembers(room: Room, userId: string): string[] {
  return Object.entries(room.members)
    .filter(([id, m]) => id !== userId && m.membership === "join")
    .map(([id]) => id);
}

/** The tick of our own item: sent once it has an event id, delivered once
 *  every other joined member has a delivered (or read) receipt at or after
 *  it, read once every other member has read it. */
export function tickOf(room: Room, item: TimelineItem, userId: string): Tick {
  if (item.pending) return item.pending;
  if (!item.eventId) return "sending";
  const position = indexOfEvent(room, item.eventId);
  const others = otherMembers(room, userId);
  if (position < 0 || others.length === 0) return "sent";
  const covers = (receipt: { eventId: string } | undefined) => {
    if (!receipt) return false;
    const at = indexOfEvent(room, receipt.eventId);
    return at >= position;
  };
  const everyone = (kind: "read" | "delivered") =>
    others.every((u) => {
      const r = room.receipts[u];
      return covers(r?.read) || (kind === "delivered" && covers(r?.delivered));
    });
  if (everyone("read")) return "read";
  if (everyone("delivered")) return "delivered";
  return "sent";
}

export function displayName(room: Room | undefined, userId: string): string {
  const name = room?.members[userId]?.displayname;
  if (name) return name;
  const local = userId.startsWith("@") ? userId.slice(1).split(":")[0] : userId;
  return local || userId;
}

/** The room's name, else the other people in it (as Matrix clients do). */
export function roomName(room: Room, userId: string): string {
  if (room.name) return room.name;
  const others = Object.entries(room.members)
    .filter(([id, m]) => id !== userId && (m.membership === "join" || m.membership === "invite"))
    .map(([id]) => displayName(room, id));
  if (others.length > 0) return others.sort().join(", ");
  if (room.membership === "invite" && room.inviter) return displayName(room, room.inviter);
  return "Empty room";
}

/** A one-on-one chat: unnamed, with at most one other (joined or invited)
 *  member; its header shows that person's presence. */
export function directPartner(room: Room, userId: string): string | undefined {
  if (room.name) return undefined;
  const others = Object.entries(room.members)
    .filter(([id, m]) => id !== userId && (m.membership === "join" || m.membership === "invite"))
    .map(([id]) => id);
  if (others.length === 1) return others[0];
  if (others.length === 0 && room.membership === "invite" && room.isDirect) return room.inviter;
  return undefined;
}

/** The latest message (or other shown event) for the room list. */
export function lastMessage(room: Room): TimelineItem | undefined {
  const items = visibleItems(room);
  for (let i = items.length - 1; i >= 0; i--) {
    if (items[i].type === "m.room.message" || items[i].type === "m.room.encrypted") return items[i];
  }
  return items[items.length - 1];
}

/** Rooms for the list: invites first, then by latest activity. */
export function sortedRooms(state: ClientState): Room[] {
  const activity = (room: Room) => {
    const items = visibleItems(room);
    return items.length > 0 ? items[items.length - 1].ts : 0;
  };
  return Object.values(state.rooms).sort((a, b) => {
    if (a.membership !== b.membership) return a.membership === "invite" ? -1 : 1;
    return activity(b) - activity(a);
  });
}

/** The event our read receipt should point at, if it is not there yet: the
 *  latest event, when something from others came after our last receipt. */
export function pendingReadReceipt(room: Room, userId: string): string | undefined {
  const latest = room.timeline[room.timeline.length - 1];
  if (!latest?.eventId) return undefined;
  const mine = room.receipts[userId]?.read;
  const readAt = mine ? indexOfEvent(room, mine.eventId) : -1;
  if (mine && readAt < 0 && room.unread === 0) return undefined;
  for (let i = room.timeline.length - 1; i > readAt; i--) {
    if (room.timeline[i].sender !== userId) return latest.eventId;
  }
  return room.unread > 0 ? latest.eventId : undefined;
}

/** Marks our own read receipt locally (so we do not post it twice) and
 *  clears the unread count the server is about to clear. */
export function markRead(state: ClientState, roomId: string, eventId: string, now: number): void {
  const room = state.rooms[roomId];
  if (!room) return;
  const mine = (room.receipts[state.userId] ??= {});
  const receipt = { eventId, ts: now };
  if (isLater(room, receipt, mine.read)) mine.read = receipt;
  room.unread = 0;
  room.highlight = 0;
  room.version++;
}

/** Forgets a room we left (the server's leave section follows). */
export function forgetRoom(state: ClientState, roomId: string): void {
  delete state.rooms[roomId];
}
