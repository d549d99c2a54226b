import type { ContainerdClient } from "../../src/containerd/client.js";
import { ProcessIO, type ProcessStreams } from "../../src/containerd/io.js";
import { CLEANUP_RPC_MS, DEFAULT_RUNTIME, deleteContainerRecord, deleteTask } from "../../src/containerd/task-cleanup.js";
import { jsonAny, type Mount, SPEC_TYPE_URL } from "../../src/containerd/types.js";
import { CanceledError, outcomeUnknown } from "../../src/errors.js";
import { serializeSpec } from "../../src/oci/serialize.js";
import type { Spec } from "../../src/oci/types.js";
import { type Logger, silentLogger } from "../../src/util/logger.js";
import { ReleaseStack } from "../../src/util/release-stack.js";

/*
 * The run sequence with the client and the IO layer only, for tests that check those layers (task-io) or a
 * generated spec inside a real container (spec-in-container) without the executor's policies in between. Not
 * part of the package: the executor is the one run sequence the package offers.
 */

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
    let status: Awaited<typeof exited>;
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

async function deleteContainer(client: ContainerdClient, id: string, taskGone: { value: boolean }, logger: Logger): Promise<void> {
  // Deleting a container whose task still exists orphans the task (containerd allows it): keep the record so
  // prune can find and finish the task later.
  if (!taskGone.value) {
    logger.error("task could not be deleted; keeping its container record for prune", { id });
    return;
  }
  await deleteContainerRecord(client, id);
}
