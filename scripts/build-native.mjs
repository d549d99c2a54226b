// Builds the native addon (native/*.c: mkfifo, pipe size, heap trim, mount) when a source is newer than the binary. Runs as the
// package's install script too, so it never fails: without the addon ctrexec falls back to mkfifo(1), which
// only costs speed (see src/containerd/fifo.ts).
import { spawnSync } from "node:child_process";
import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const addon = join(root, "build/Release/ctrexec_fifo.node");
const sources = ["native/fifo.c", "native/mount.c", "binding.gyp"].map((f) => join(root, f));

if (!existsSync(addon) || sources.some((f) => statSync(addon).mtimeMs < statSync(f).mtimeMs)) {
  // Build against the headers of the node that runs us; never download headers (CI has no network for that).
  const nodedir = resolve(dirname(process.execPath), "..");
  const args = ["rebuild", "--silent"];
  if (existsSync(join(nodedir, "include/node/node_api.h"))) args.push(`--nodedir=${nodedir}`);
  const local = join(root, "node_modules/node-gyp/bin/node-gyp.js");
  const gyp = existsSync(local) ? local : process.env.npm_config_node_gyp;
  const status = gyp
    ? spawnSync(process.execPath, [gyp, ...args], { cwd: root, stdio: ["ignore", "ignore", "inherit"] }).status
    : 1;
  if (status !== 0) {
    console.error("ctrexec: the native mkfifo addon did not build; FIFOs will be made with mkfifo(1), which is slower");
  }
}
