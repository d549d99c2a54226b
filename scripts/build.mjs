// Builds the native mkfifo addon (if stale; optional) and compiles TypeScript (required).
import { spawnSync } from "node:child_process";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
spawnSync(process.execPath, [join(root, "scripts/build-native.mjs")], { cwd: root, stdio: "inherit" });
const tsc = join(root, "node_modules/typescript/bin/tsc");
const status = spawnSync(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: root, stdio: "inherit" }).status;
process.exit(status ?? 1);
