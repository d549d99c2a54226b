import type { Logger } from "../util/logger.js";
import type { ContainerdClient } from "./client.js";
import type { CreateTaskRequest } from "./types.js";

/** containerd could not run the binary at `path`: it cannot see it (another mount namespace) or not execute it. */
function launcherUnusable(err: unknown, path: string): boolean {
  const message = err instanceof Error ? err.message : "";
  return message.includes("invalid custom binary path") || message.includes(`fork/exec ${path}`);
}

/**
 * Tasks.Create with a shim binary of the caller's choice in `runtimePath` while containerd can run it; once it
 * cannot, as plain Tasks.Create, with containerd's own shim binary. Which binary, and when, is the caller's policy.
 */
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
        this.#logger.warn(
          `containerd cannot run the shim launcher ${launcher} (${(err as Error).message}); tasks go to its own shim binary from now on`,
        );
      }
      await this.#client.tasks.create(request);
    }
  }
}
