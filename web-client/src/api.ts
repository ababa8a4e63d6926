// HTTP calls to the homeserver (same origin). Errors carry the Matrix
// errcode; network failures are told apart so sends can retry them.

import type { MessagesResponse } from "./store";

export interface Session {
  accessToken: string;
  userId: string;
  deviceId: string;
}

export class MatrixError extends Error {
  constructor(
    readonly status: number,
    readonly errcode: string,
    message: string,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** The request never got an answer (offline, server restarting). */
export class NetworkError extends Error {}

const CLIENT = "/_matrix/client/v3";

/** Whether a failed request may succeed if sent again as it is. */
export function isRetryable(error: unknown): boolean {
  if (error instanceof NetworkError) return true;
  return error instanceof MatrixError && (error.status >= 500 || error.status === 429 || error.status === 0);
}

async function request<T>(method: string, path: string, token: string | undefined, body?: unknown): Promise<T> {
  const headers: Record<string, string> = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response: Response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new NetworkError(String(e));
  }
  let json: Record<string, unknown> = {};
  try {
    json = await response.json();
  } catch {
    if (response.ok) throw new NetworkError("Unreadable answer");
  }
  if (!response.ok) {
    const retry = typeof json.retry_after_ms === "number" ? json.retry_after_ms : undefined;
    throw new MatrixError(
      response.status,
      typeof json.errcode === "string" ? json.errcode : "M_UNKNOWN",
      typeof json.error === "string" ? json.error : `HTTP ${response.status}`,
      retry,
    );
  }
  return json as T;
}

const enc = encodeURIComponent;

export async function login(user: string, password: string): Promise<Session> {
  const r = await request<{ access_token: string; user_id: string; device_id: string }>("POST", `${CLIENT}/login`, undefined, {
    type: "m.login.password",
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: "Tern web",
  });
  return { accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id };
}

/** Registers with the dummy stage of user-interactive auth. Tern takes it
 *  at once; servers that want a UIA session first answer 401 with one. */
export async function register(username: string, password: string): Promise<Session> {
  const body = { username, password, initial_device_display_name: "Tern web" };
  type Registered = { access_token: string; user_id: string; device_id: string };
  let r: Registered;
  try {
    r = await request<Registered>("POST", `${CLIENT}/register`, undefined, { ...body, auth: { type: "m.login.dummy" } });
  } catch (e) {
    if (!(e instanceof MatrixError) || e.status !== 401) throw e;
    const flows = await fetch(`${CLIENT}/register`, { method: "POST", body: JSON.stringify(body) }).then((res) => res.json());
    const session = typeof flows.session === "string" ? flows.session : undefined;
    r = await request<Registered>("POST", `${CLIENT}/register`, undefined, { ...body, auth: { type: "m.login.dummy", session } });
  }
  return { accessToken: r.access_token, userId: r.user_id, deviceId: r.device_id };
}

export class Api {
  constructor(readonly session: Session) {}

  private call<T>(method: string, path: string, body?: unknown): Promise<T> {
    return request<T>(method, path, this.session.accessToken, body);
  }

  logout(): Promise<unknown> {
    return this.call("POST", `${CLIENT}/logout`, {});
  }

  whoami(): Promise<{ user_id: string }> {
    return this.call("GET", `${CLIENT}/account/whoami`);
  }

  /** The SSE sync URL. EventSource cannot set headers, so the token rides in
   *  the query (see the README's trade-off). */
  syncUrl(filter: unknown, since?: string): string {
    const params = new URLSearchParams({ access_token: this.session.accessToken, filter: JSON.stringify(filter) });
    if (since) params.set("since", since);
    return `${CLIENT}/sync?${params}`;
  }

  presence(userId: string): Promise<Record<string, unknown>> {
    return this.call("GET", `${CLIENT}/presence/${enc(userId)}/status`);
  }

  ackSync(nextBatch: string): Promise<unknown> {
    return this.call("POST", "/_matrix/client/unstable/tern/sync/ack", { next_batch: nextBatch });
  }

  createRoom(body: Record<string, unknown>): Promise<{ room_id: string }> {
    return this.call("POST", `${CLIENT}/createRoom`, body);
  }

  join(roomId: string): Promise<{ room_id: string }> {
    return this.call("POST", `${CLIENT}/join/${enc(roomId)}`, {});
  }

  leave(roomId: string): Promise<unknown> {
    return this.call("POST", `${CLIENT}/rooms/${enc(roomId)}/leave`, {});
  }

  invite(roomId: string, userId: string): Promise<unknown> {
    return this.call("POST", `${CLIENT}/rooms/${enc(roomId)}/invite`, { user_id: userId });
  }

  messages(roomId: string, from: string, limit = 30): Promise<MessagesResponse> {
    return this.call("GET", `${CLIENT}/rooms/${enc(roomId)}/messages?dir=b&limit=${limit}&from=${enc(from)}`);
  }

  /** Sends once per txnId: the server answers a repeat with the same event. */
  send(roomId: string, txnId: string, content: Record<string, unknown>): Promise<{ event_id: string }> {
    return this.call("PUT", `${CLIENT}/rooms/${enc(roomId)}/send/m.room.message/${enc(txnId)}`, content);
  }

  typing(roomId: string, typing: boolean, timeout = 30000): Promise<unknown> {
    const body = typing ? { typing, timeout } : { typing };
    return this.call("PUT", `${CLIENT}/rooms/${enc(roomId)}/typing/${enc(this.session.userId)}`, body);
  }

  readReceipt(roomId: string, eventId: string): Promise<unknown> {
    return this.call("POST", `${CLIENT}/rooms/${enc(roomId)}/receipt/m.read/${enc(eventId)}`, {});
  }

  messageInfo(roomId: string, eventId: string): Promise<MessageInfo> {
    return this.call("GET", `/_matrix/client/unstable/tern/rooms/${enc(roomId)}/receipts/${enc(eventId)}`);
  }

  /** Uploads with progress (fetch cannot report upload progress). */
  upload(file: Blob, name: string, onProgress: (fraction: number) => void): { promise: Promise<string>; abort: () => void } {
    const xhr = new XMLHttpRequest();
    const promise = new Promise<string>((resolve, reject) => {
      xhr.open("POST", `/_matrix/media/v3/upload?filename=${enc(name)}`);
      xhr.setRequestHeader("Authorization", `Bearer ${this.session.accessToken}`);
      xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      };
      xhr.onload = () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(xhr.responseText);
        } catch {
          /* not JSON */
        }
        if (xhr.status === 200 && typeof json.content_uri === "string") {
          resolve(json.content_uri);
        } else {
          reject(
            new MatrixError(
              xhr.status,
              typeof json.errcode === "string" ? json.errcode : "M_UNKNOWN",
              typeof json.error === "string" ? json.error : `Upload failed (HTTP ${xhr.status})`,
            ),
          );
        }
      };
      xhr.onerror = () => reject(new NetworkError("Upload failed"));
      xhr.onabort = () => reject(new NetworkError("Upload aborted"));
      xhr.send(file);
    });
    return { promise, abort: () => xhr.abort() };
  }

  /** Media need the Authorization header, so they are fetched as blobs. */
  async mediaBlob(mxc: string, thumbnail?: { width: number; height: number }): Promise<Blob> {
    const match = /^mxc:\/\/([^/]+)\/([^/?#]+)$/.exec(mxc);
    if (!match) throw new MatrixError(400, "M_INVALID_PARAM", "Not an mxc URI");
    const [, server, mediaId] = match;
    const path = thumbnail
      ? `/_matrix/client/v1/media/thumbnail/${enc(server)}/${enc(mediaId)}?width=${thumbnail.width}&height=${thumbnail.height}&method=scale`
      : `/_matrix/client/v1/media/download/${enc(server)}/${enc(mediaId)}`;
    let response: Response;
    try {
      response = await fetch(path, { headers: { Authorization: `Bearer ${this.session.accessToken}` } });
    } catch (e) {
      throw new NetworkError(String(e));
    }
    if (!response.ok) throw new MatrixError(response.status, "M_UNKNOWN", `Media: HTTP ${response.status}`);
    return response.blob();
  }
}

export interface MessageInfo {
  event_id: string;
  sender: string;
  sent_ts: number;
  members: { user_id: string; delivered_ts: number | null; read_ts: number | null }[];
  delivered_to_all: boolean;
  read_by_all: boolean;
}
