/// <reference types="vitest/config" />
import { defineConfig } from "vite";

// The homeserver the dev server forwards API calls to (`npm run dev`).
const homeserver = process.env.TERN_URL ?? "http://127.0.0.1:8008";

export default defineConfig({
  build: {
    outDir: "dist",
    emptyOutDir: true,
    sourcemap: false,
    // One script, no preload helper injected into the page.
    modulePreload: false,
    // Small assets stay files: the server's CSP allows no inline data for scripts.
    assetsInlineLimit: 0,
    rollupOptions: {
      output: {
        // Stable names: dist/ is committed and embedded in the server binary,
        // which serves it with ETags, so hashes in names would only churn.
        entryFileNames: "assets/app.js",
        chunkFileNames: "assets/[name].js",
        assetFileNames: (asset) => (asset.names.some((n) => n.endsWith(".css")) ? "assets/app.css" : "assets/[name][extname]"),
      },
    },
  },
  server: {
    proxy: {
      "/_matrix": { target: homeserver, changeOrigin: false },
      "/_tern": { target: homeserver, changeOrigin: false },
    },
  },
  test: {
    include: ["test/**/*.test.ts"],
  },
});
