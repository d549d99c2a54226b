// Runs the compiled node:test files (Node 20's --test takes no globs and finds no .ts files in a directory).
// Usage: node scripts/run-tests.mjs [unit|integration|<substring>...]
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const filters = process.argv.slice(2);

function find(dir) {
  const out = [];
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...find(p));
    else if (e.name.endsWith(".test.js")) out.push(p);
  }
  return out;
}

// dist/test/rootless/ runs as an unprivileged user inside rootlesskit's namespaces, started by
// test/integration/rootless.test.ts: only a filter naming "rootless/" picks it here.
const inner = join(root, "dist/test/rootless/");
const files = find(join(root, "dist/test"))
  .filter((f) => !f.startsWith(inner) || filters.some((x) => x.includes("rootless/")))
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(" ")}`);
  process.exit(1);
}
const reporter = process.env.CI ? ["--test-reporter=spec"] : [];
// No test may hang CI: each test gets at most 3 minutes.
reporter.push("--test-timeout=180000");
const r = spawnSync(process.execPath, ["--test", ...reporter, ...files], { cwd: root, stdio: "inherit" });
process.exit(r.status ?? 1);
