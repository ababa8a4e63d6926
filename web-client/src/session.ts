// The signed-in session, kept in localStorage so a reload stays signed in.

import type { Session } from "./api";

const KEY = "tern.session";

export function loadSession(): Session | null {
  try {
    const value = JSON.parse(localStorage.getItem(KEY) ?? "null");
    if (value && typeof value.accessToken === "string" && typeof value.userId === "string") return value as Session;
  } catch {
    /* unreadable: sign in again */
  }
  return null;
}

export function saveSession(session: Session): void {
  localStorage.setItem(KEY, JSON.stringify(session));
}

export function clearSession(): void {
  localStorage.removeItem(KEY);
}
