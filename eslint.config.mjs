// eslint for the page snippet, the console's script and the tests; scripts/check.py runs it
// (js-lint step).
// check.py installs eslint and globals into .venv/node_modules, out of the tree: they are
// resolved from there first, then from a node_modules beside this file.
import { createRequire } from "node:module";

const require = createRequire(new URL("./.venv/eslint.config.cjs", import.meta.url));
const js = require("@eslint/js");
const globals = require("globals");

// No HTML from strings, in the snippet and in the console's script alike: page text is set
// with textContent, never parsed from a string.
const textOnly = "Page text is set with textContent only.";
const noHtmlFromStrings = {
  "no-restricted-properties": [
    "error",
    { property: "innerHTML", message: textOnly },
    { property: "outerHTML", message: textOnly },
    { property: "insertAdjacentHTML", message: textOnly },
  ],
};

export default [
  { ignores: [".venv/**", "**/node_modules/**", "build/**", "dist/**"] },
  js.configs.recommended,
  {
    // The snippet runs in visitors' browsers as a classic script: ES2017, no modules.
    files: ["src/calltrack/tracking/*.js"],
    languageOptions: {
      ecmaVersion: 2017,
      sourceType: "script",
      globals: { ...globals.browser, globalThis: "readonly" },
    },
    rules: {
      // ES2017 has no optional catch binding: "catch (e)" it is, e unused.
      "no-unused-vars": ["error", { caughtErrors: "none" }],
      "no-var": "error",
      "prefer-const": "error",
      eqeqeq: ["error", "smart"],
      "no-implicit-globals": "error",
      ...noHtmlFromStrings,
      "no-eval": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
    },
  },
  {
    // The console's own script (the vendored chart library is not ours to lint).
    files: ["src/calltrack/console/static/*.js"],
    languageOptions: { ecmaVersion: 2017, sourceType: "script", globals: globals.browser },
    rules: {
      "no-unused-vars": ["error", { caughtErrors: "none", args: "none" }],
      eqeqeq: ["error", "smart"],
      "no-implicit-globals": "error",
      ...noHtmlFromStrings,
      "no-eval": "error",
    },
  },
  {
    files: ["tests/js/**/*.mjs", "eslint.config.mjs"],
    languageOptions: { ecmaVersion: "latest", sourceType: "module", globals: globals.node },
  },
];
