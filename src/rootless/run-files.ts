import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { FailedPreconditionError } from "../errors.js";
import { configPaths } from "./containerd-config.js";
import type { RootlessLayout } from "./layout.js";

/** The runtime dir, made 0700 when it is missing and its parent lets this user (no logind makes it here). */
export function ensureRuntimeDir(layout: RootlessLayout): void {
  try {
    mkdirSync(layout.runtimeDir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new FailedPreconditionError(
      `the runtime dir ${layout.runtimeDir} is missing and cannot be made (${(err as Error).message}): set XDG_RUNTIME_DIR, or have root run scripts/setup-rootless.sh <user>`,
      { cause: err },
    );
  }
}

/** The daemon's dirs, private to the user (0700 where this makes them): its images, sockets, containers' state. */
export function makeDirs(layout: RootlessLayout): void {
  const dirs = [layout.kitStateDir, layout.containerdState, layout.containerdRoot, configPaths(layout).optDir, layout.stateDir];
  for (const d of [...dirs, dirname(layout.configFile), dirname(layout.logFile), layout.fifoRoot]) mkdirSync(d, { recursive: true, mode: 0o700 });
}

/**
 * What a daemon that is gone left behind: our record, rootlesskit's child_pid and API socket (rootlesskit removes
 * its state dir only when it exits on its own) and containerd's sockets. Each is recreated by its owner.
 */
export function removeRunFiles(layout: RootlessLayout): void {
  const files = [
    layout.recordFile,
    join(layout.kitStateDir, "child_pid"),
    join(layout.kitStateDir, "api.sock"),
    layout.address,
    `${layout.address}.ttrpc`,
  ];
  for (const f of files) rmSync(f, { force: true });
}

/** The pid rootlesskit wrote for its child, if it did. */
export function readChildPid(layout: RootlessLayout): number | undefined {
  try {
    const pid = Number(readFileSync(join(layout.kitStateDir, "child_pid"), "utf8").trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}
