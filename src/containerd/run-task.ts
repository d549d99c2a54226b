import { CanceledError, NotFoundError, outcomeUnknown, UnavailableError } from "../errors.js";
import { serializeSpec } from "../oci/serialize.js";
import type { Spec } from "../oci/types.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { ReleaseStack } from "../util/release-stack.js";
import type { ContainerdClient } from "./client.js";
import { ProcessIO, type ProcessStreams } from "./io.js";
import { jsonAny, type Mount, SPEC_TYPE_URL } from "./types.js";

export const DEFAULT_RUNTIME = "io.containerd.runc.v2";

/** How long cleanup waits for a killed process to be reported gone before deleting anyway. */
export const KILL_WAIT_MS = 10_000;
/** Deadline of each cleanup RPC; cleanup never uses the caller's signal. */
export const CLEANUP_RPC_MS = 30_000;

export interface RunTaskOptions {
  id: string;
  spec: Spec;
  /** The task's root mounts, mounted by the shim on the bundle's `rootfs` (spec.root.path "rootfs"). */
  rootfs: Mount[];
  fifoRoot: string;
  streams?: ProcessStreams;
  labels?: Record<string, string>;
  runtime?: string;
  signal?: AbortSignal | undefined;
  logger?: Logger;
  onStarted?: (pid: number) => void;
}

/**
 * Runs one container to completion with the client and IO layer only: the minimal correct RPC sequence
 * (container → FIFOs → task → Wait before Start → CloseIO after stdin EOF → exit and output EOF → delete)
 * with every release registered right after its acquire. Resolves with the exit status; a canceled run
 * is SIGKILLed and rejects with a CanceledError once everything is cleaned up.
 */
export async function runTask(client: ContainerdClient, options: RunTaskOptions): Promise<{ exitStatus: number }> {
  const logger = options.logger ?? silentLogger;
  const { id, signal } = options;
  const stack = new ReleaseStack(logger);
  try {
    signal?.throwIfAborted();
    // Creations never take the caller's signal: canceled halfway, containerd may still make the record or the
    // task, which would then be left behind. A cancel is acted on once they returned.
    await client.containers.create({
      id,
      labels: options.labels ?? {},
      runtime: { name: options.runtime ?? DEFAULT_RUNTIME },
      spec: jsonAny(SPEC_TYPE_URL, serializeSpec(options.spec)),
    });
    const taskGone = { value: true };
    stack.defer("delete container", () => deleteContainer(client, id, taskGone, logger));
    signal?.throwIfAborted();

    const io = await ProcessIO.create({ fifoRoot: options.fifoRoot, id, logger, ...options.streams });
    stack.defer("close IO", () => io.close());

    try {
      await client.tasks.create({ containerId: id, rootfs: options.rootfs, ...io.config });
    } catch (err) {
      // A deadline or a lost connection does not say whether the task was made: delete it if it was.
      if (outcomeUnknown(err)) taskGone.value = await deleteTask(client, id, logger).catch(() => false);
      throw err;
    }
    taskGone.value = false;
    stack.defer("delete task", async () => {
      taskGone.value = await deleteTask(client, id, logger);
    });
    signal?.throwIfAborted();

    io.closeStdinWhenDone(() => client.tasks.closeIO({ containerId: id }, { timeoutMs: CLEANUP_RPC_MS }));
    const exited = client.tasks.wait({ containerId: id });
    exited.catch(() => {}); // observed below; never an unhandled rejection
    const pid = await client.tasks.start({ containerId: id }, { signal });
    options.onStarted?.(pid);

    const onAbort = () => {
      client.tasks
        .kill({ containerId: id, signal: 9, all: true }, { timeoutMs: CLEANUP_RPC_MS })
        .catch((err: unknown) => logger.debug("kill on cancel failed", { error: err }));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    let status;
    try {
      status = await exited;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    if (signal?.aborted) {
      io.cancel();
      throw new CanceledError(`run ${id} was canceled`, { cause: signal.reason });
    }
    await io.wait();
    return { exitStatus: status.exitStatus };
  } catch (err) {
    if (signal?.aborted && !(err instanceof CanceledError)) {
      throw new CanceledError(`run ${id} was canceled`, { cause: signal.reason });
    }
    throw err;
  } finally {
    await stack.release();
  }
}

/**
 * Deletes a task whatever its state: a paused task is resumed, a running or created one SIGKILLed (all
 * processes) and waited for, within KILL_WAIT_MS, first. Bounded: every RPC has a deadline. Returns true when
 * the task is gone (deleted, or there was none).
 */
export async function deleteTask(client: ContainerdClient, containerId: string, logger: Logger): Promise<boolean> {
  const opts = { timeoutMs: CLEANUP_RPC_MS };
  // Usually the process has exited and one Delete is all it takes; only a task that is still there afterwards
  // gets the careful path (status, resume, kill, wait, delete).
  try {
    await client.tasks.delete(containerId, opts);
    return true;
  } catch (err) {
    if (err instanceof NotFoundError) return true;
    if (err instanceof UnavailableError) {
      logger.error("failed to delete task", { id: containerId, error: err });
      throw err;
    }
  }
  try {
    const info = await client.tasks.get({ containerId }, opts);
    if (info.status === "PAUSED" || info.status === "PAUSING") {
      // A frozen process cannot receive SIGKILL: thaw it first, or the delete below could never succeed.
      await client.tasks.resume(containerId, opts).catch((err: unknown) => logger.warn("resume before delete failed", { id: containerId, error: err }));
    }
    if (info.status !== "STOPPED") {
      const exited = client.tasks.wait({ containerId }, { timeoutMs: KILL_WAIT_MS });
      exited.catch(() => {});
      await client.tasks.kill({ containerId, signal: 9, all: true }, opts).catch((err: unknown) => {
        if (!(err instanceof NotFoundError)) throw err;
      });
      await exited.catch((err: unknown) =>
        logger.warn("killed task did not report its exit in time; deleting anyway", { id: containerId, error: err }),
      );
    }
    await client.tasks.delete(containerId, opts);
    return true;
  } catch (err) {
    if (err instanceof NotFoundError) return true;
    logger.error("failed to delete task", { id: containerId, error: err });
    throw err;
  }
}

async function deleteContainer(
  client: ContainerdClient,
  id: string,
  taskGone: { value: boolean },
  logger: Logger,
): Promise<void> {
  // Deleting a container whose task still exists orphans the task (containerd allows it): keep the record so
  // prune can find and finish the task later.
  if (!taskGone.value) {
    logger.error("task could not be deleted; keeping its container record for prune", { id });
    return;
  }
  await deleteContainerRecord(client, id);
}

/** Deletes a container record, bounded; one that is already gone counts as deleted. */
export async function deleteContainerRecord(client: ContainerdClient, id: string): Promise<void> {
  try {
    await client.containers.delete(id, { timeoutMs: CLEANUP_RPC_MS });
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
}

/** Deletes an exec process, bounded; one that is already gone counts as deleted. */
export async function deleteExecProcess(client: ContainerdClient, containerId: string, execId: string): Promise<void> {
  try {
    await client.tasks.deleteProcess({ containerId, execId }, { timeoutMs: CLEANUP_RPC_MS });
  } catch (err) {
    if (!(err instanceof NotFoundError)) throw err;
  }
}
