// Sign in with a password, or create an account (the dummy auth stage).

import { useState } from "preact/hooks";

import { login, MatrixError, register, type Session } from "../api";

export function Login({ onSession }: { onSession: (session: Session) => void }) {
  const [mode, setMode] = useState<"login" | "register">("login");
  const [username, setUsername] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      const user = username.trim().replace(/^@/, "");
      onSession(mode === "login" ? await login(user, password) : await register(user, password));
    } catch (err) {
      setError(err instanceof MatrixError ? err.message : "Cannot reach the server. Check your connection and try again.");
      setBusy(false);
    }
  };

  const registering = mode === "register";
  return (
    <main class="login">
      <form class="login-card" onSubmit={submit} aria-labelledby="login-title">
        <div class="brand" aria-hidden="true">
          <img src="/favicon.svg" alt="" width={48} height={48} />
        </div>
        <h1 id="login-title">{registering ? "Create your Tern account" : "Sign in to Tern"}</h1>
        <p class="login-server">on {location.host}</p>
        <label for="login-username">Username</label>
        <input
          id="login-username"
          name="username"
          autocomplete="username"
          required
          value={username}
          onInput={(e) => setUsername(e.currentTarget.value)}
          autoFocus
        />
        <label for="login-password">Password</label>
        <input
          id="login-password"
          name="password"
          type="password"
          autocomplete={registering ? "new-password" : "current-password"}
          required
          minLength={registering ? 8 : undefined}
          value={password}
          onInput={(e) => setPassword(e.currentTarget.value)}
        />
        {error && (
          <p class="form-error" role="alert">
            {error}
          </p>
        )}
        <button type="submit" class="primary" disabled={busy}>
          {registering ? "Create account" : "Sign in"}
        </button>
        <p class="login-switch">
          {registering ? "Have an account?" : "New here?"}{" "}
          <button
            type="button"
            class="link"
            onClick={() => {
              setMode(registering ? "login" : "register");
              setError(null);
            }}
          >
            {registering ? "Sign in" : "Create an account"}
          </button>
        </p>
      </form>
    </main>
  );
}
