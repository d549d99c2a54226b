/** Bounded deletion of what a run leaves in containerd (task, container record, exec process), and the default runtime. */
import { NotFoundError, UnavailableError } from "../errors.js";
import type { Logger } from "../util/logger.js";
import type { ContainerdClient } from "./client.js";

/** The runtime ctrexec's containers use unless told otherwise (runc through its v2 shim). */
export const DEFAULT_RUNTIME = "io.containerd.runc.v2";

/** How long cleanup waits for a killed process to be reported gone before deleting anyway. */
export const KILL_WAIT_MS = 10_000;
/** Deadline of each cleanup RPC; cleanup never uses the caller's signal. */
export const CLEANUP_RPC_MS = 30_000;

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
      await client.tasks
        .resume(containerId, opts)
        .catch((err: unknown) => logger.warn("resume before delete failed", { id: containerId, error: err }));
    }
    if (info.status !== "STOPPED") {
      const exited = client.tasks.wait({ containerId }, { timeoutMs: KILL_WAIT_MS });
      exited.catch(() => {});
      await killAll(client, { containerId }, opts, logger).catch((err: unknown) => {
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

/**
 * SIGKILLs a task's init and everything else in its container. runc finds the rest through the container's
 * cgroup, and a container without one (a rootless daemon on cgroup v1: `cgroupsPath` is empty) makes
 * `kill --all` fail; then its init alone is killed, which ends its pid namespace and every process in it.
 */
export async function killAll(client: ContainerdClient, ref: { containerId: string }, opts: { timeoutMs: number }, logger: Logger): Promise<void> {
  try {
    await client.tasks.kill({ ...ref, signal: 9, all: true }, opts);
  } catch (err) {
    if (err instanceof NotFoundError) throw err;
    logger.debug("kill --all failed; killing the init process alone", { id: ref.containerId, error: err });
    await client.tasks.kill({ ...ref, signal: 9 }, opts);
  }
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
