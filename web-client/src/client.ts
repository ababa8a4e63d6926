// The signed-in client: the store, the sync stream and every action the UI
// takes (send, upload, page back, rooms, receipts, typing). Views subscribe
// and re-render on `changed()`; new messages from others are handed to
// `onArrivals` listeners (the UI's desktop notifications). How any of it
// looks is the UI's business (src/ui/, src/format.ts).

import { Api, isRetryable, type Session } from "./api";
import {
  addEcho,
  applyMessages,
  applyPresence,
  applySync,
  confirmEcho,
  createState,
  forgetRoom,
  markRead,
  pendingReadReceipt,
  removeEcho,
  updateEcho,
  type Arrival,
  type ClientState,
} from "./store";
import { SyncConnection, type SyncStatus } from "./sync";

const TYPING_TIMEOUT_MS = 30_000;
const TYPING_REFRESH_MS = 20_000;
const TYPING_IDLE_MS = 5_000;
const MAX_RETRY_DELAY_MS = 15_000;

interface OutgoingFile {
  file: File;
  roomId: string;
  content: Record<string, unknown>;
}

let txnCounter = 0;
function newTxnId(): string {
  txnCounter += 1;
  return `web${Date.now().toString(36)}.${txnCounter}.${Math.random().toString(36).slice(2, 8)}`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class Client {
  readonly api: Api;
  readonly state: ClientState;
  status: SyncStatus = "connecting";
  /** Bumped on every change; views compare it. */
  version = 0;

  private readonly sync: SyncConnection;
  private readonly listeners = new Set<() => void>();
  private readonly arrivalListeners = new Set<(arrivals: Arrival[]) => void>();
  private notifyScheduled = false;
  private readonly sendQueues = new Map<string, Promise<void>>();
  private readonly files = new Map<string, OutgoingFile>();
  private readonly paginating = new Map<string, Promise<void>>();
  private readonly postedRead = new Map<string, string>();
  private typing?: { roomId: string; sentAt: number; idle: ReturnType<typeof setTimeout> };
  private synced = false;
  private readonly presenceAsked = new Set<string>();

  constructor(
    readonly session: Session,
    private readonly onLoggedOut: () => void,
  ) {
    this.api = new Api(session);
    this.state = createState(session.userId);
    this.sync = new SyncConnection(this.api, {
      onSync: (sync) => {
        const arrivals = applySync(this.state, sync, Date.now());
        this.synced = true;
        if (arrivals.length > 0) for (const listener of this.arrivalListeners) listener(arrivals);
        this.changed();
      },
      onStatus: (status) => {
        this.status = status;
        this.changed();
      },
      onLoggedOut: () => this.onLoggedOut(),
    });
  }

  get userId(): string {
    return this.session.userId;
  }

  /** True once the first sync is in. */
  get ready(): boolean {
    return this.synced;
  }

  start(): void {
    this.sync.start();
  }

  stop(): void {
    this.sync.stop();
    if (this.typing) clearTimeout(this.typing.idle);
    for (const room of Object.values(this.state.rooms)) {
      for (const item of [...room.timeline, ...room.echoes]) {
        if (item.localUrl) URL.revokeObjectURL(item.localUrl);
      }
    }
    this.listeners.clear();
    this.arrivalListeners.clear();
  }

  subscribe(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Hears of each sync's new messages from others, as they are applied
   *  (none from the first sync: that is history, not news). */
  onArrivals(listener: (arrivals: Arrival[]) => void): () => void {
    this.arrivalListeners.add(listener);
    return () => this.arrivalListeners.delete(listener);
  }

  /** Coalesces a burst of changes into one render. */
  changed(): void {
    this.version++;
    if (this.notifyScheduled) return;
    this.notifyScheduled = true;
    queueMicrotask(() => {
      this.notifyScheduled = false;
      for (const listener of this.listeners) listener();
    });
  }

  // ---- sending ---------------------------------------------------------

  sendText(roomId: string, body: string): void {
    const txnId = newTxnId();
    const content = { msgtype: "m.text", body };
    addEcho(this.state, roomId, { txnId, type: "m.room.message", ts: Date.now(), content });
    this.stopTyping();
    this.changed();
    this.enqueueSend(roomId, txnId, content);
  }

  /** Uploads a file (an image shows inline) and sends it. */
  async sendFile(roomId: string, file: File): Promise<void> {
    const txnId = newTxnId();
    const info: Record<string, unknown> = { mimetype: file.type || "application/octet-stream", size: file.size };
    let msgtype = "m.file";
    let localUrl: string | undefined;
    if (file.type.startsWith("image/")) {
      try {
        const bitmap = await createImageBitmap(file);
        info.w = bitmap.width;
        info.h = bitmap.height;
        bitmap.close();
        msgtype = "m.image";
        localUrl = URL.createObjectURL(file);
      } catch {
        // Not an image the browser can draw: send it as a file.
      }
    }
    const content: Record<string, unknown> = { msgtype, body: file.name, info };
    if (msgtype === "m.file") content.filename = file.name;
    addEcho(this.state, roomId, { txnId, type: "m.room.message", ts: Date.now(), content, progress: 0, localUrl });
    this.files.set(txnId, { file, roomId, content });
    this.changed();
    await this.uploadAndSend(txnId);
  }

  /** Sends a failed message again, with the same transaction id. */
  retry(roomId: string, txnId: string): void {
    updateEcho(this.state, roomId, txnId, { pending: "sending" });
    this.changed();
    const outgoing = this.files.get(txnId);
    if (outgoing && outgoing.content.url === undefined) {
      void this.uploadAndSend(txnId);
      return;
    }
    const echo = this.state.rooms[roomId]?.echoes.find((e) => e.txnId === txnId);
    if (echo) this.enqueueSend(roomId, txnId, echo.content);
  }

  discard(roomId: string, txnId: string): void {
    const echo = this.state.rooms[roomId]?.echoes.find((e) => e.txnId === txnId);
    if (echo?.localUrl) URL.revokeObjectURL(echo.localUrl);
    this.files.delete(txnId);
    removeEcho(this.state, roomId, txnId);
    this.changed();
  }

  private async uploadAndSend(txnId: string): Promise<void> {
    const outgoing = this.files.get(txnId);
    if (!outgoing) return;
    const { roomId, file, content } = outgoing;
    try {
      const upload = this.api.upload(file, file.name, (fraction) => {
        updateEcho(this.state, roomId, txnId, { progress: fraction });
        this.changed();
      });
      content.url = await upload.promise;
    } catch {
      updateEcho(this.state, roomId, txnId, { pending: "failed" });
      this.changed();
      return;
    }
    updateEcho(this.state, roomId, txnId, { progress: undefined, content: { ...content } });
    this.changed();
    this.files.delete(txnId);
    this.enqueueSend(roomId, txnId, { ...content });
  }

  /** One send at a time per room, so messages keep their order; network
   *  errors retry with the same txnId, so the server stores each once. */
  private enqueueSend(roomId: string, txnId: string, content: Record<string, unknown>): void {
    const previous = this.sendQueues.get(roomId) ?? Promise.resolve();
    const next = previous.catch(() => {}).then(() => this.deliver(roomId, txnId, content));
    this.sendQueues.set(roomId, next);
  }

  private async deliver(roomId: string, txnId: string, content: Record<string, unknown>): Promise<void> {
    let delay = 1000;
    for (;;) {
      try {
        const { event_id } = await this.api.send(roomId, txnId, content);
        confirmEcho(this.state, roomId, txnId, event_id);
        this.changed();
        return;
      } catch (error) {
        if (!isRetryable(error)) {
          updateEcho(this.state, roomId, txnId, { pending: "failed" });
          this.changed();
          return;
        }
        const wait = (error as { retryAfterMs?: number }).retryAfterMs ?? delay;
        delay = Math.min(delay * 2, MAX_RETRY_DELAY_MS);
        await sleep(wait);
      }
    }
  }

  // ---- history ---------------------------------------------------------

  /** Loads an older page of a room; one request at a time per room. */
  paginate(roomId: string): Promise<void> {
    const running = this.paginating.get(roomId);
    if (running) return running;
    const room = this.state.rooms[roomId];
    if (!room || room.membership !== "join" || room.prevBatch === null) return Promise.resolve();
    const from = room.prevBatch;
    // Done before views hear of the change: they restore the scroll
    // position once no page is loading.
    const task = this.api.messages(roomId, from).then(
      (page) => {
        this.paginating.delete(roomId);
        // A limited sync may have reset the room meanwhile.
        if (this.state.rooms[roomId]?.prevBatch === from) applyMessages(this.state, roomId, page);
        this.changed();
      },
      (error) => {
        this.paginating.delete(roomId);
        this.changed();
        throw error;
      },
    );
    this.paginating.set(roomId, task);
    return task;
  }

  isPaginating(roomId: string): boolean {
    return this.paginating.has(roomId);
  }

  // ---- rooms -----------------------------------------------------------

  /** An existing one-on-one chat with `userId`, else a new one. */
  async startDirectChat(userId: string): Promise<string> {
    for (const room of Object.values(this.state.rooms)) {
      if (room.membership !== "join" || room.name) continue;
      const others = Object.entries(room.members).filter(([id, m]) => id !== this.userId && (m.membership === "join" || m.membership === "invite"));
      if (others.length === 1 && others[0][0] === userId) return room.roomId;
    }
    const { room_id } = await this.api.createRoom({ is_direct: true, invite: [userId], preset: "trusted_private_chat" });
    return room_id;
  }

  async createGroup(name: string, invite: string[]): Promise<string> {
    const { room_id } = await this.api.createRoom({ name, invite, preset: "private_chat" });
    return room_id;
  }

  invite(roomId: string, userId: string): Promise<unknown> {
    return this.api.invite(roomId, userId);
  }

  async leave(roomId: string): Promise<void> {
    await this.api.leave(roomId);
    forgetRoom(this.state, roomId);
    this.changed();
  }

  async acceptInvite(roomId: string): Promise<void> {
    await this.api.join(roomId);
  }

  async declineInvite(roomId: string): Promise<void> {
    await this.api.leave(roomId);
    forgetRoom(this.state, roomId);
    this.changed();
  }

  // ---- receipts and typing ---------------------------------------------

  /** Called while the room is on screen and the window has focus. */
  markRoomRead(roomId: string): void {
    const room = this.state.rooms[roomId];
    if (!room || room.membership !== "join") return;
    const eventId = pendingReadReceipt(room, this.userId);
    if (!eventId || this.postedRead.get(roomId) === eventId) return;
    this.postedRead.set(roomId, eventId);
    markRead(this.state, roomId, eventId, Date.now());
    this.changed();
    this.api.readReceipt(roomId, eventId).catch(() => this.postedRead.delete(roomId));
  }

  /** Called on each edit of the composer. */
  noteTyping(roomId: string, hasText: boolean): void {
    if (!hasText) {
      this.stopTyping();
      return;
    }
    const now = Date.now();
    if (this.typing && this.typing.roomId !== roomId) this.stopTyping();
    if (!this.typing || now - this.typing.sentAt > TYPING_REFRESH_MS) {
      this.api.typing(roomId, true, TYPING_TIMEOUT_MS).catch(() => {});
      if (this.typing) clearTimeout(this.typing.idle);
      this.typing = { roomId, sentAt: now, idle: setTimeout(() => this.stopTyping(), TYPING_IDLE_MS) };
      return;
    }
    clearTimeout(this.typing.idle);
    this.typing.idle = setTimeout(() => this.stopTyping(), TYPING_IDLE_MS);
  }

  /** Sending clears typing on the server; otherwise we say so ourselves. */
  stopTyping(tell = true): void {
    if (!this.typing) return;
    clearTimeout(this.typing.idle);
    const { roomId } = this.typing;
    this.typing = undefined;
    if (tell) this.api.typing(roomId, false).catch(() => {});
  }

  /** Asks for the presence of someone sync has told us nothing about yet,
   *  once per session. (Tern's sync does not yet send the current presence
   *  of people who newly share a room with us; see the README.) */
  ensurePresence(userId: string): void {
    if (this.state.presence[userId] || this.presenceAsked.has(userId)) return;
    this.presenceAsked.add(userId);
    this.api.presence(userId).then(
      (content) => {
        if (this.state.presence[userId]) return; // sync was first
        applyPresence(this.state, userId, content, Date.now());
        this.changed();
      },
      () => this.presenceAsked.delete(userId),
    );
  }
}
