// Builds the native mkfifo addon (if stale; optional), compiles TypeScript (required) and bundles the CLI.
import { spawnSync } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
spawnSync(process.execPath, [join(root, "scripts/build-native.mjs")], { cwd: root, stdio: "inherit" });
const tsc = join(root, "node_modules/typescript/bin/tsc");
const status = spawnSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" }).status;
if (status !== 0) process.exit(status ?? 1);

// The CLI as one file: every `ctrexec` invocation would otherwise load its ~80 modules one by one, and Node 20 has
// no compile cache (docs/performance.md has the start-up figures). A CommonJS bundle (ctrexec.cjs) so that it can
// be compiled with a V8 code cache (src/cli/code-cache.ts), which ctrexec.mjs, the package's bin, loads. Both sit
// next to bin.js, so the paths its modules resolve from their own URL (the addon, build/ctrexec-shim,
// package.json) stay the same: `import.meta.url` becomes the bundle's own file URL.
const esbuild = await import(pathToFileURL(join(root, "node_modules/esbuild/lib/main.js")).href);
const cli = join(root, "dist/src/cli");
const bundle = join(cli, "ctrexec.cjs");
await esbuild.build({
  entryPoints: [join(cli, "main.js")],
  outfile: bundle,
  bundle: true,
  platform: "node",
  format: "cjs",
  target: "node20",
  define: { "import.meta.url": "__ctrexecModuleUrl" },
  banner: { js: 'var __ctrexecModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  legalComments: "none",
  logLevel: "warning",
});
// vm.Script gives the bundle no module loader: an `import()` esbuild left in it (of a package it did not bundle)
// would fail only when the CLI reaches it.
if (/[^\w.$]import\(/.test(readFileSync(bundle, "utf8"))) {
  console.error(`build: ${bundle} has a dynamic import(), which the CLI's loader cannot run; bundle or require it`);
  process.exit(1);
}
await esbuild.build({
  entryPoints: [join(cli, "start.js")],
  outfile: join(cli, "ctrexec.mjs"),
  bundle: true,
  platform: "node",
  format: "esm",
  target: "node20",
  legalComments: "none",
  logLevel: "warning",
});

// The code cache, made by a fresh node (V8 refuses a cache made under other flags) that runs the bundle through
// the paths every command takes (options, help, the protocol's descriptors, a call that finds no socket), so
// that what they compile is in it too. Without it the CLI compiles the bundle itself: a warning, not a failure.
const warmUp = `
import { writeCodeCache } from ${JSON.stringify(pathToFileURL(join(cli, "code-cache.js")).href)};
await writeCodeCache(${JSON.stringify(bundle)}, ${JSON.stringify(`${bundle}.cache`)}, async ({ main }) => {
  const out = process.stdout.write, err = process.stderr.write;
  process.stdout.write = process.stderr.write = () => true;
  try {
    for (const argv of [["--help"], ["--version"], ["run", "--help"], ["exec", "--help"], ["ps", "--help"],
      ["version", "--address", "/nonexistent/ctrexec-code-cache.sock"], ["ps", "--address", "/nonexistent/ctrexec-code-cache.sock"]]) {
      await main(argv);
    }
  } finally {
    process.stdout.write = out;
    process.stderr.write = err;
  }
});
`;
const cache = spawnSync(process.execPath, ["--input-type=module", "-e", warmUp], { cwd: root, stdio: "inherit" });
if (cache.status !== 0) {
  rmSync(`${bundle}.cache`, { force: true });
  console.error("build: no code cache for the CLI (it works without one, only starts slower)");
}
