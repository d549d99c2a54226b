import { accessSync, constants as fsc, statSync } from "node:fs";
import { fileURLToPath } from "node:url";
import type { Logger } from "../util/logger.js";
import type { ContainerdClient } from "./client.js";
import { DEFAULT_RUNTIME } from "./run-task.js";
import type { CreateTaskRequest } from "./types.js";

/**
 * containerd runs the runtime binary twice for every task, beside the shim's own RPCs: `start` in Tasks.Create,
 * even when the task joins a live shim (a shim group), and `delete` in Tasks.Delete, whenever the task's
 * connection to its shim closes, even when the shim deleted the container a moment before. With the runc v2
 * shim each is a Go process, and `delete` starts a Go runc as well: together ~13 ms of CPU per run on a
 * 2-core machine, 15–20% of all the work a run of `true` costs there.
 *
 * ctrexec-shim (native/shim-launcher.c) goes in Tasks.Create's runtime_path. It answers those two calls the
 * way containerd-shim-runc-v2 would when their outcome is certain (the group's shim answers; runc has no state
 * for the container) and hands everything else to containerd-shim-runc-v2 unchanged.
 */

/** A regular file this process may execute (root passes access(X_OK) for any file with an x bit). */
export function isExecutable(path: string): boolean {
  try {
    accessSync(path, fsc.X_OK);
    const st = statSync(path);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/** The launcher built by scripts/build-native.mjs, when it is there and executable. */
export function builtShimLauncher(): string | undefined {
  // dist/src/containerd/shim-launcher.js (or the CLI bundle, dist/src/cli/ctrexec.mjs) → build/ at the package root.
  const path = fileURLToPath(new URL("../../../build/ctrexec-shim", import.meta.url));
  return isExecutable(path) ? path : undefined;
}

/**
 * The containerd versions whose runc v2 shim the launcher mirrors (socket dir and name, the `address` file,
 * DeleteResponse, the runc root): 1.6 and 1.7. Another version gets it only when asked for by path.
 */
export function launcherKnowsShimOf(containerdVersion: string): boolean {
  const m = /^v?(\d+)\.(\d+)\./.exec(containerdVersion);
  return m?.[1] === "1" && (m[2] === "6" || m[2] === "7");
}

/**
 * The launcher an executor's tasks go through: `option` when given (false: none), else the built one, with the
 * runc v2 runtime on a containerd whose shim it mirrors. undefined: containerd runs its own shim binary.
 */
export function chooseShimLauncher(option: string | false | undefined, runtime: string, containerdVersion: string): string | undefined {
  if (option !== undefined) return option || undefined;
  return runtime === DEFAULT_RUNTIME && launcherKnowsShimOf(containerdVersion) ? builtShimLauncher() : undefined;
}

/** containerd could not run the binary at `path`: it cannot see it (another mount namespace) or not execute it. */
function launcherUnusable(err: unknown, path: string): boolean {
  const message = err instanceof Error ? err.message : "";
  return message.includes("invalid custom binary path") || message.includes(`fork/exec ${path}`);
}

/** Tasks.Create through the launcher while containerd can run it; once it cannot, as plain Tasks.Create. */
export class TaskCreator {
  readonly #client: ContainerdClient;
  readonly #logger: Logger;
  #launcher: string | undefined;

  constructor(client: ContainerdClient, launcher: string | undefined, logger: Logger) {
    this.#client = client;
    this.#launcher = launcher;
    this.#logger = logger;
  }

  async create(request: CreateTaskRequest): Promise<void> {
    const launcher = this.#launcher;
    if (!launcher) {
      await this.#client.tasks.create(request);
      return;
    }
    try {
      await this.#client.tasks.create({ ...request, runtimePath: launcher });
    } catch (err) {
      // containerd checks the path before it makes the task's bundle, and removes the bundle when the binary
      // fails to start: nothing of the task exists, and the same request can go again without the launcher.
      if (!launcherUnusable(err, launcher)) throw err;
      if (this.#launcher === launcher) {
        this.#launcher = undefined;
        this.#logger.warn(`containerd cannot run the shim launcher ${launcher} (${(err as Error).message}); tasks go to its own shim binary from now on`);
      }
      await this.#client.tasks.create(request);
    }
  }
}
