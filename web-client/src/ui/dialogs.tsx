// Modal dialogs on the native <dialog>: it traps focus, closes on Escape and
// we hand focus back to whatever opened it.

import type { ComponentChildren } from "preact";
import { useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";

import type { MessageInfo } from "../api";
import type { Client } from "../client";
import { formatDateTime } from "../format";
import { useMediaUrl } from "../media";
import { displayName, type Room } from "../store";
import { normalizeUserId } from "./common";

export function Modal({ title, onClose, children, wide }: { title: string; onClose: () => void; children: ComponentChildren; wide?: boolean }) {
  const dialogRef = useRef<HTMLDialogElement>(null);
  // Layout effect: focus returns in the same commit that removes the dialog.
  useLayoutEffect(() => {
    const opener = document.activeElement as HTMLElement | null;
    const dialog = dialogRef.current!;
    dialog.showModal();
    return () => {
      if (dialog.open) dialog.close();
      opener?.focus?.();
    };
  }, []);
  const titleId = `dialog-${title.replace(/\W+/g, "-").toLowerCase()}`;
  return (
    <dialog
      ref={dialogRef}
      class={`modal ${wide ? "wide" : ""}`}
      aria-labelledby={titleId}
      onCancel={(e) => {
        e.preventDefault();
        onClose();
      }}
      onClick={(e) => {
        // A click on the backdrop (the dialog itself, outside its content).
        if (e.target === dialogRef.current) onClose();
      }}
    >
      <div class="modal-body">
        <header class="modal-header">
          <h2 id={titleId}>{title}</h2>
          <button type="button" class="icon" onClick={onClose} aria-label="Close">
            <svg viewBox="0 0 24 24" aria-hidden="true">
              <path d="M19 6.4 17.6 5 12 10.6 6.4 5 5 6.4 10.6 12 5 17.6 6.4 19 12 13.4 17.6 19 19 17.6 13.4 12z" />
            </svg>
          </button>
        </header>
        {children}
      </div>
    </dialog>
  );
}

/** A form in a modal with one submit action, busy state and error line. */
function FormDialog({
  title,
  submitLabel,
  onClose,
  onSubmit,
  children,
}: {
  title: string;
  submitLabel: string;
  onClose: () => void;
  onSubmit: () => Promise<void>;
  children: ComponentChildren;
}) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await onSubmit();
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
      setBusy(false);
    }
  };
  return (
    <Modal title={title} onClose={onClose}>
      <form onSubmit={submit} class="dialog-form">
        {children}
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <div class="dialog-actions">
          <button type="button" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" class="primary" disabled={busy}>
            {submitLabel}
          </button>
        </div>
      </form>
    </Modal>
  );
}

export function NewChatDialog({ client, onClose, onCreated }: { client: Client; onClose: () => void; onCreated: (roomId: string) => void }) {
  const [userId, setUserId] = useState("");
  return (
    <FormDialog
      title="New chat"
      submitLabel="Start chat"
      onClose={onClose}
      onSubmit={async () => {
        const roomId = await client.startDirectChat(normalizeUserId(userId, client.userId));
        onClose();
        onCreated(roomId);
      }}
    >
      <label for="new-chat-user">User ID</label>
      <input
        id="new-chat-user"
        placeholder="@name:server"
        required
        autoFocus
        autocomplete="off"
        value={userId}
        onInput={(e) => setUserId(e.currentTarget.value)}
      />
    </FormDialog>
  );
}

export function NewGroupDialog({ client, onClose, onCreated }: { client: Client; onClose: () => void; onCreated: (roomId: string) => void }) {
  const [name, setName] = useState("");
  const [members, setMembers] = useState("");
  return (
    <FormDialog
      title="New group"
      submitLabel="Create group"
      onClose={onClose}
      onSubmit={async () => {
        const invite = members
          .split(/[\s,]+/)
          .map((m) => normalizeUserId(m, client.userId))
          .filter(Boolean);
        const roomId = await client.createGroup(name.trim(), invite);
        onClose();
        onCreated(roomId);
      }}
    >
      <label for="new-group-name">Group name</label>
      <input id="new-group-name" required autoFocus value={name} onInput={(e) => setName(e.currentTarget.value)} />
      <label for="new-group-members">Members to invite</label>
      <input
        id="new-group-members"
        placeholder="@bob:server, @carol:server"
        aria-describedby="new-group-members-hint"
        autocomplete="off"
        value={members}
        onInput={(e) => setMembers(e.currentTarget.value)}
      />
      <p class="hint" id="new-group-members-hint">
        User IDs, separated by commas or spaces.
      </p>
    </FormDialog>
  );
}

export function InviteDialog({ client, roomId, onClose }: { client: Client; roomId: string; onClose: () => void }) {
  const [userId, setUserId] = useState("");
  return (
    <FormDialog
      title="Invite to chat"
      submitLabel="Invite"
      onClose={onClose}
      onSubmit={async () => {
        await client.invite(roomId, normalizeUserId(userId, client.userId));
        onClose();
      }}
    >
      <label for="invite-user">User ID</label>
      <input
        id="invite-user"
        placeholder="@name:server"
        required
        autoFocus
        autocomplete="off"
        value={userId}
        onInput={(e) => setUserId(e.currentTarget.value)}
      />
    </FormDialog>
  );
}

export function LeaveDialog({ client, roomId, name, onClose }: { client: Client; roomId: string; name: string; onClose: () => void }) {
  return (
    <FormDialog
      title="Leave chat"
      submitLabel="Leave"
      onClose={onClose}
      onSubmit={async () => {
        await client.leave(roomId);
        onClose();
      }}
    >
      <p>Leave “{name}”? You will no longer get its messages.</p>
    </FormDialog>
  );
}

/** WhatsApp's "message info": each member's delivered and read times, kept
 *  fresh while receipts come in. */
export function MessageInfoDialog({ client, room, eventId, onClose }: { client: Client; room: Room; eventId: string; onClose: () => void }) {
  const [info, setInfo] = useState<MessageInfo | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let live = true;
    client.api.messageInfo(room.roomId, eventId).then(
      (i) => live && (setInfo(i), setError(null)),
      (e) => live && setError(e instanceof Error ? e.message : String(e)),
    );
    return () => {
      live = false;
    };
  }, [client, room.roomId, eventId, room.version]);
  const time = (ts: number | null) => (ts === null ? "—" : formatDateTime(ts));
  return (
    <Modal title="Message info" onClose={onClose} wide>
      {error && (
        <p class="form-error" role="alert">
          {error}
        </p>
      )}
      {!info && !error && <p>Loading…</p>}
      {info && (
        <div class="message-info">
          <p>
            Sent <time dateTime={new Date(info.sent_ts).toISOString()}>{formatDateTime(info.sent_ts)}</time>
            {info.read_by_all ? " · read by everyone" : info.delivered_to_all ? " · delivered to everyone" : ""}
          </p>
          <table>
            <thead>
              <tr>
                <th scope="col">Member</th>
                <th scope="col">Delivered</th>
                <th scope="col">Read</th>
              </tr>
            </thead>
            <tbody>
              {info.members.map((m) => (
                <tr key={m.user_id} data-user-id={m.user_id}>
                  <th scope="row">{displayName(room, m.user_id)}</th>
                  <td data-field="delivered">{time(m.delivered_ts)}</td>
                  <td data-field="read">{time(m.read_ts)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      )}
    </Modal>
  );
}

/** An image at full size (downloaded with the token). */
export function ImageDialog({ client, mxc, name, onClose }: { client: Client; mxc: string; name: string; onClose: () => void }) {
  const { url, failed } = useMediaUrl(client.api, mxc);
  return (
    <Modal title={name || "Image"} onClose={onClose} wide>
      {url ? <img class="full-image" src={url} alt={name} /> : <p>{failed ? "The image could not be loaded." : "Loading…"}</p>}
      {url && (
        <p>
          <a href={url} download={name}>
            Download
          </a>
        </p>
      )}
    </Modal>
  );
}
