import type { ContainerdClient } from "../containerd/client.js";
import { CLEANUP_RPC_MS } from "../containerd/task-cleanup.js";
import { ContainerExitedError, CtrexecError, NotFoundError } from "../errors.js";

/**
 * An exec that failed because its container's process had gone meanwhile (it was running when the exec looked,
 * and gone when containerd or runc got the call: "cannot exec in a deleted state", a task not found, runc's
 * "container not running") gets ContainerExitedError, as an exec into a stopped container does up front. The
 * task's state decides, not the message: a failure in a running container (a missing command) stays as it is.
 */
export async function exitedOr(client: ContainerdClient, id: string, err: unknown): Promise<unknown> {
  if (!CtrexecError.is(err) || err instanceof ContainerExitedError) return err;
  if (!["NOT_FOUND", "FAILED_PRECONDITION", "UNKNOWN"].includes(err.code)) return err;
  // Not the caller's signal: a canceled exec still deserves the right error (bounded).
  const status = await client.tasks.get({ containerId: id }, { timeoutMs: CLEANUP_RPC_MS }).then(
    (t) => t.status,
    (e: unknown) => (e instanceof NotFoundError ? "GONE" : undefined),
  );
  // Only a process known gone: a task in any other state (or one we could not ask about) keeps its error.
  if (status !== "STOPPED" && status !== "GONE") return err;
  return new ContainerExitedError(`container ${id} has stopped`, { cause: err });
}
