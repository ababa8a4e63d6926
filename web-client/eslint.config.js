// ESLint: JavaScript's and typescript-eslint's recommended rules everywhere,
// and the rules of hooks on the client's code (Preact's hooks follow
// React's rules). Formatting is prettier's, so no style rules here.
//
// eslint-plugin-react-hooks knows React's hooks by their module, "react",
// so it cannot tell that Preact's useRef returns a ref: it goes by the name
// instead (a `fooRef`). Every ref is named so, which the rule below checks;
// then reading or writing a ref during render is reported too.

import js from "@eslint/js";
import reactHooks from "eslint-plugin-react-hooks";
import { defineConfig, globalIgnores } from "eslint/config";
import tseslint from "typescript-eslint";

export default defineConfig([
  globalIgnores(["dist/", "test-artifacts/"]),
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    files: ["src/**/*.{ts,tsx}"],
    extends: [reactHooks.configs.flat.recommended],
    rules: {
      "no-restricted-syntax": [
        "error",
        {
          selector: "VariableDeclarator[init.callee.name='useRef'][id.name!=/Ref$/]",
          message: "Name refs `somethingRef`: the hooks rules recognise Preact's refs by that name.",
        },
      ],
    },
  },
]);
