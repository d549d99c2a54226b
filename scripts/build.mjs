// Builds the native mkfifo addon (if stale; optional), compiles TypeScript (required) and bundles the CLI.
import { spawnSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
spawnSync(process.execPath, [join(root, "scripts/build-native.mjs")], { cwd: root, stdio: "inherit" });
const tsc = join(root, "node_modules/typescript/bin/tsc");
const status = spawnSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" }).status;
if (status !== 0) process.exit(status ?? 1);

// The CLI as one file: every `ctrexec` invocation would otherwise load its ~80 modules one by one, and Node 20 has
// no compile cache (docs/performance.md has the start-up figures). It sits next to bin.js, so the paths its
// modules resolve from their own URL (the addon, build/ctrexec-shim, package.json) stay the same. The modules' `require` of
// CommonJS packages needs one at the top.
const esbuild = await import(pathToFileURL(join(root, "node_modules/esbuild/lib/main.js")).href);
await esbuild.build({
  entryPoints: [join(root, "dist/src/cli/bin.js")],
  outfile: join(root, "dist/src/cli/ctrexec.mjs"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  banner: { js: "import { createRequire as __ctrexecRequire } from 'node:module'; const require = __ctrexecRequire(import.meta.url);" },
  legalComments: "none",
  logLevel: "warning",
});
