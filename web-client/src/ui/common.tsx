// Small pieces shared by the views.

import { useEffect, useReducer, useState } from "preact/hooks";

import type { Client } from "../client";
import type { Presence } from "../store";

/** Re-renders the calling view whenever the client changes. */
export function useClientVersion(client: Client): number {
  const [, bump] = useReducer<number, void>((n) => n + 1, 0);
  useEffect(() => client.subscribe(() => bump()), [client]);
  return client.version;
}

/** The time, renewed every `ms` (and so a re-render then): for relative
 *  times such as "last seen 5 min ago" and "Yesterday". Read from state,
 *  not the clock, so that rendering stays pure. */
export function useNow(ms: number): number {
  const [now, setNow] = useState(Date.now);
  useEffect(() => {
    const timer = setInterval(() => setNow(Date.now()), ms);
    return () => clearInterval(timer);
  }, [ms]);
  return now;
}

const PALETTE = ["#8a3ffc", "#0f62fe", "#007d79", "#b8480b", "#9f1853", "#198038", "#6929c4", "#005d5d"];

export function Avatar({ name, id, size = 40 }: { name: string; id: string; size?: number }) {
  let hash = 0;
  for (let i = 0; i < id.length; i++) hash = (hash * 31 + id.charCodeAt(i)) >>> 0;
  const initial = (name.replace(/^[@#!]/, "")[0] ?? "?").toUpperCase();
  return (
    <span
      class="avatar"
      aria-hidden="true"
      style={{ background: PALETTE[hash % PALETTE.length], width: `${size}px`, height: `${size}px`, fontSize: `${size * 0.45}px` }}
    >
      {initial}
    </span>
  );
}

export type PresenceKind = "online" | "unavailable" | "offline";

export function presenceKind(presence: Presence | undefined): PresenceKind {
  if (!presence) return "offline";
  if (presence.presence === "online") return "online";
  if (presence.presence === "unavailable") return "unavailable";
  return "offline";
}

const PRESENCE_LABEL: Record<PresenceKind, string> = { online: "Online", unavailable: "Away", offline: "Offline" };

export function PresenceDot({ presence }: { presence: Presence | undefined }) {
  const kind = presenceKind(presence);
  return <span class={`presence-dot ${kind}`} role="img" aria-label={PRESENCE_LABEL[kind]} title={PRESENCE_LABEL[kind]} data-presence={kind} />;
}

/** `bob` -> `@bob:server`, for people who type a bare name. */
export function normalizeUserId(input: string, ownUserId: string): string {
  const trimmed = input.trim();
  if (trimmed === "") return trimmed;
  const server = ownUserId.slice(ownUserId.indexOf(":") + 1);
  const withAt = trimmed.startsWith("@") ? trimmed : `@${trimmed}`;
  return withAt.includes(":") ? withAt : `${withAt}:${server}`;
}
