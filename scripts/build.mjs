// Builds the native mkfifo addon (when its source is newer than the binary) and compiles TypeScript.
// The addon is optional at run time (src/containerd/fifo.ts falls back to mkfifo(1)), so a failed addon
// build is a warning; a failed tsc is an error.
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const addon = join(root, "build/Release/ctrexec_fifo.node");
const source = join(root, "native/fifo.c");
const run = (cmd, args) => spawnSync(cmd, args, { cwd: root, stdio: ["ignore", "ignore", "inherit"] }).status;

if (!existsSync(addon) || statSync(addon).mtimeMs < statSync(source).mtimeMs) {
  // Build against the headers of the node that runs us; never download headers (no network in CI).
  const nodedir = resolve(dirname(process.execPath), "..");
  const args = ["rebuild", "--silent"];
  if (existsSync(join(nodedir, "include/node/node_api.h"))) args.push(`--nodedir=${nodedir}`);
  const gyp = join(root, "node_modules/node-gyp/bin/node-gyp.js");
  if (run(process.execPath, [gyp, ...args]) !== 0) {
    console.error("build: the native mkfifo addon did not build; FIFOs will be made with mkfifo(1), which is slower");
  }
}

const tsc = join(root, "node_modules/typescript/bin/tsc");
const status = spawnSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" }).status;
process.exit(status ?? 1);
