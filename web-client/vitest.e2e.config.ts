import { defineConfig } from "vitest/config";

// End-to-end: one file, run alone, in order (the scenarios share one server
// and one browser; a chat is a story). TERN_SCREENSHOT=1 runs the README
// picture's script instead (`npm run screenshot`).
export default defineConfig({
  test: {
    include: process.env.TERN_SCREENSHOT === "1" ? ["e2e/readme-screenshot.ts"] : ["e2e/**/*.e2e.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    fileParallelism: false,
    pool: "forks",
    reporters: ["verbose"],
  },
});
