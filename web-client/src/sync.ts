// Follows the SSE sync stream and keeps it open: EventSource reconnects by
// itself (with Last-Event-ID) after a dropped connection; when it gives up
// (an error answer, e.g. while the server restarts behind a proxy) or the
// browser goes offline, we open a new one with `since` = the last event id,
// backing off up to 10 s, at once when the browser is back online. Each
// applied event is acknowledged (debounced), which is what turns the
// senders' ticks to "delivered".

import type { Api } from "./api";
import { MatrixError } from "./api";
import type { SyncResponse } from "./store";

export type SyncStatus = "connecting" | "live" | "reconnecting";

export interface SyncHandlers {
  onSync(sync: SyncResponse): void;
  onStatus(status: SyncStatus): void;
  /** The access token is no longer valid. */
  onLoggedOut(): void;
}

const FILTER = { room: { timeline: { limit: 30 } } };
const ACK_DELAY_MS = 250;
const MAX_BACKOFF_MS = 10_000;

export class SyncConnection {
  private source?: EventSource;
  private lastId?: string;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private ackTimer?: ReturnType<typeof setTimeout>;
  private acked?: string;
  private backoff = 500;
  private stopped = false;
  private status: SyncStatus = "connecting";

  constructor(
    private readonly api: Api,
    private readonly handlers: SyncHandlers,
  ) {}

  start(): void {
    window.addEventListener("online", this.reconnectNow);
    window.addEventListener("offline", this.dropConnection);
    this.open();
  }

  stop(): void {
    this.stopped = true;
    window.removeEventListener("online", this.reconnectNow);
    window.removeEventListener("offline", this.dropConnection);
    clearTimeout(this.retryTimer);
    clearTimeout(this.ackTimer);
    this.source?.close();
    this.source = undefined;
  }

  private setStatus(status: SyncStatus): void {
    if (status !== this.status) {
      this.status = status;
      this.handlers.onStatus(status);
    }
  }

  private open(): void {
    if (this.stopped) return;
    this.source?.close();
    const source = new EventSource(this.api.syncUrl(FILTER, this.lastId));
    this.source = source;
    source.addEventListener("sync", (e) => {
      const event = e as MessageEvent<string>;
      let sync: SyncResponse;
      try {
        sync = JSON.parse(event.data);
      } catch {
        return;
      }
      this.handlers.onSync(sync);
      this.lastId = event.lastEventId || sync.next_batch;
      this.backoff = 500;
      this.setStatus("live");
      this.scheduleAck();
    });
    source.onopen = () => this.setStatus("live");
    source.onerror = () => {
      if (this.source !== source) return;
      if (source.readyState === EventSource.CONNECTING) {
        // EventSource retries on its own, resuming with Last-Event-ID.
        this.setStatus("reconnecting");
        return;
      }
      source.close();
      this.setStatus("reconnecting");
      this.scheduleReopen();
    };
  }

  private scheduleReopen(): void {
    clearTimeout(this.retryTimer);
    const delay = this.backoff;
    this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF_MS);
    this.retryTimer = setTimeout(() => void this.checkAndReopen(), delay);
  }

  /** Before reopening, make sure the token still works: EventSource hides
   *  the status of an answer it rejects. */
  private async checkAndReopen(): Promise<void> {
    if (this.stopped) return;
    try {
      await this.api.whoami();
    } catch (e) {
      if (e instanceof MatrixError && e.errcode === "M_UNKNOWN_TOKEN") {
        this.handlers.onLoggedOut();
        return;
      }
      this.scheduleReopen();
      return;
    }
    this.open();
  }

  /** The browser lost the network: an open stream may be dead without
   *  knowing it yet, so close it and reopen from the last id when back. */
  private readonly dropConnection = (): void => {
    if (this.stopped) return;
    this.source?.close();
    this.source = undefined;
    this.setStatus("reconnecting");
    this.scheduleReopen();
  };

  private readonly reconnectNow = (): void => {
    if (this.stopped || this.source?.readyState === EventSource.OPEN) return;
    this.backoff = 500;
    clearTimeout(this.retryTimer);
    void this.checkAndReopen();
  };

  private scheduleAck(): void {
    if (this.ackTimer !== undefined) return;
    this.ackTimer = setTimeout(() => {
      this.ackTimer = undefined;
      const id = this.lastId;
      if (!id || id === this.acked) return;
      this.api.ackSync(id).then(
        () => {
          this.acked = id;
        },
        () => {
          // The next event (or the reconnect's `since`) proves delivery too.
        },
      );
    }, ACK_DELAY_MS);
  }
}
