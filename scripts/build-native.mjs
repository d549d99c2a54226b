// Builds the native addon (native/fifo.c, native/mount.c, native/safe-fs.c, native/remove-tree.c,
// native/idmap.c: mkfifo, pipe size, heap trim, mount, fd-relative file operations, tree removal, idmapped
// mounts) and the shim launcher (native/shim-launcher.c, a program containerd runs) when a source is newer
// than its binary. Runs as the package's install script too, so it never fails: without the addon ctrexec
// falls back to mkfifo(1), and without the launcher containerd runs its own shim binary; either only costs
// speed (src/containerd/fifo.ts, src/executor/shims/launcher.ts). Runs in a user namespace are the exception:
// they need the addon, and fail with a FailedPreconditionError that says so without it (src/fs/idmap.ts).
import { spawnSync } from "node:child_process";
import { existsSync, renameSync, rmSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const addon = join(root, "build/Release/ctrexec_fifo.node");
const sources = [
  "native/fifo.c",
  "native/mount.c",
  "native/safe-fs.c",
  "native/remove-tree.c",
  "native/idmap.c",
  "native/errno-error.h",
  "native/string-arg.h",
  "binding.gyp",
].map((f) => join(root, f));

if (!existsSync(addon) || sources.some((f) => statSync(addon).mtimeMs < statSync(f).mtimeMs)) {
  // Build against the headers of the node that runs us; never download headers (CI has no network for that).
  const nodedir = resolve(dirname(process.execPath), "..");
  const args = ["rebuild", "--silent"];
  if (existsSync(join(nodedir, "include/node/node_api.h"))) args.push(`--nodedir=${nodedir}`);
  const local = join(root, "node_modules/node-gyp/bin/node-gyp.js");
  const gyp = existsSync(local) ? local : process.env.npm_config_node_gyp;
  const status = gyp ? spawnSync(process.execPath, [gyp, ...args], { cwd: root, stdio: ["ignore", "ignore", "inherit"] }).status : 1;
  if (status !== 0) {
    console.error("ctrexec: the native mkfifo addon did not build; FIFOs will be made with mkfifo(1), which is slower");
  }
}

// After the addon: node-gyp's rebuild starts by removing build/. Compiled to a temporary name and renamed, so
// that containerd never runs a half-written binary.
const launcher = join(root, "build/ctrexec-shim");
const launcherSource = join(root, "native/shim-launcher.c");
if (!existsSync(launcher) || statSync(launcher).mtimeMs < statSync(launcherSource).mtimeMs) {
  const tmp = `${launcher}.${process.pid}`;
  const cc = ["cc", "gcc"].find((c) => spawnSync(c, ["--version"], { stdio: "ignore" }).status === 0);
  const status = cc
    ? spawnSync(cc, ["-O2", "-Wall", "-Wextra", "-o", tmp, launcherSource], { cwd: root, stdio: ["ignore", "ignore", "inherit"] }).status
    : 1;
  if (status === 0) renameSync(tmp, launcher);
  else {
    rmSync(tmp, { force: true });
    console.error("ctrexec: the shim launcher did not build; containerd will run containerd-shim-runc-v2 for every task, which is slower");
  }
}
