// The top of the app: the sign-in page, or the two panes (chats and the
// open chat) that collapse to one on a narrow screen.

import { useCallback, useEffect, useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";

import type { Session } from "../api";
import { Client } from "../client";
import { clearMediaCache } from "../media";
import { clearSession, loadSession, saveSession } from "../session";
import { ChatView } from "./chat";
import { useClientVersion } from "./common";
import { Login } from "./login";
import { useDesktopNotifications } from "./notifications";
import { Sidebar } from "./sidebar";

export function App() {
  const [session, setSession] = useState<Session | null>(loadSession);
  const signIn = (s: Session) => {
    saveSession(s);
    setSession(s);
  };
  const signOut = useCallback(() => {
    clearSession();
    clearMediaCache();
    setSession(null);
  }, []);
  if (!session) return <Login onSession={signIn} />;
  return <Main key={session.accessToken} session={session} onSignedOut={signOut} />;
}

function Main({ session, onSignedOut }: { session: Session; onSignedOut: () => void }) {
  const client = useMemo(() => new Client(session, onSignedOut), [session, onSignedOut]);
  const [roomId, setRoomId] = useState<string | null>(null);
  const returnFocusRef = useRef<string | null>(null);
  useClientVersion(client);

  const openRoom = useCallback((id: string) => {
    returnFocusRef.current = id;
    setRoomId(id);
  }, []);
  useDesktopNotifications(client, openRoom);

  useEffect(() => {
    client.start();
    return () => client.stop();
  }, [client]);

  // A room we left (or declined) closes; one just created waits for sync.
  // Rooms count as seen once they were there while open.
  const room = roomId ? client.state.rooms[roomId] : undefined;
  const seenRef = useRef(new Set<string>());
  useEffect(() => {
    if (room) seenRef.current.add(room.roomId);
    else if (roomId && seenRef.current.has(roomId)) setRoomId(null);
  }, [roomId, room]);

  const total = Object.values(client.state.rooms).reduce((n, r) => n + (r.membership === "join" ? r.unread : 0), 0);
  useEffect(() => {
    document.title = total > 0 ? `(${total}) Tern` : "Tern";
  }, [total]);

  // Back on the list (narrow screens): focus the chat we came from. A layout
  // effect runs in the same task that shows the list, so the focus is there
  // as soon as the list is.
  const focusOnBackRef = useRef<string | null>(null);
  const back = () => {
    focusOnBackRef.current = returnFocusRef.current;
    setRoomId(null);
  };
  useLayoutEffect(() => {
    const id = focusOnBackRef.current;
    if (roomId || !id) return;
    focusOnBackRef.current = null;
    document.querySelector<HTMLElement>(`[data-room-id="${CSS.escape(id)}"] .room-open`)?.focus();
  }, [roomId]);

  const logOut = async () => {
    client.stop();
    await client.api.logout().catch(() => {});
    onSignedOut();
  };

  return (
    <div class={`layout ${roomId ? "show-chat" : "show-list"}`}>
      <h1 class="visually-hidden">Tern</h1>
      <Sidebar client={client} selected={roomId} onOpen={openRoom} onLogOut={logOut} />
      <main class="chat-pane" aria-label="Chat">
        {roomId ? (
          <ChatView key={roomId} client={client} roomId={roomId} onBack={back} />
        ) : (
          <div class="empty-chat">
            <p>{client.ready ? "Pick a chat, or start a new one." : "Loading your chats…"}</p>
          </div>
        )}
      </main>
    </div>
  );
}
