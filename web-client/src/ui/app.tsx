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
  const returnFocus = useRef<string | null>(null);
  useClientVersion(client);

  useEffect(() => {
    client.start();
    return () => client.stop();
  }, [client]);

  const openRoom = useCallback((id: string) => {
    returnFocus.current = id;
    setRoomId(id);
  }, []);
  useDesktopNotifications(client, openRoom);

  // A room we left (or declined) closes; one just created waits for sync.
  const room = roomId ? client.state.rooms[roomId] : undefined;
  const seen = useRef(new Set<string>());
  if (room) seen.current.add(room.roomId);
  useEffect(() => {
    if (roomId && !room && seen.current.has(roomId)) setRoomId(null);
  });

  const total = Object.values(client.state.rooms).reduce((n, r) => n + (r.membership === "join" ? r.unread : 0), 0);
  useEffect(() => {
    document.title = total > 0 ? `(${total}) Tern` : "Tern";
  }, [total]);

  // Back on the list (narrow screens): focus the chat we came from. A layout
  // effect runs in the same task that shows the list, so the focus is there
  // as soon as the list is.
  const focusOnBack = useRef<string | null>(null);
  const back = () => {
    focusOnBack.current = returnFocus.current;
    setRoomId(null);
  };
  useLayoutEffect(() => {
    const id = focusOnBack.current;
    if (roomId || !id) return;
    focusOnBack.current = null;
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
