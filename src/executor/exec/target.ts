import { CanceledError, ContainerExitedError, NotFoundError } from "../../errors.js";
import type { Process, Spec } from "../../oci/types.js";
import { fromOciMappings, type IdMapping } from "../../oci/userns.js";
import type { ExecutorContext } from "../context.js";
import { LABEL } from "../labels.js";
import type { RunState } from "../running.js";

/** What an exec needs of its container: the process spec to start from, and the rootfs to resolve a user in. */
export interface ExecTarget {
  process: Process;
  rootfs: string;
  /** The container's user namespace maps, when it has one: an exec's user must be mapped by them. */
  userns: IdMapping | undefined;
}

/** How often a container another process is still starting is looked at again. */
const POLL_MS = 100;

/**
 * The exec's container: one of this executor's runs (waiting for its start instead of polling), or, from
 * containerd's record, a run of any other ctrexec process on this host once its task runs.
 */
export async function execTarget(ctx: ExecutorContext, running: ReadonlyMap<string, RunState>, id: string, signal: AbortSignal): Promise<ExecTarget> {
  const state = running.get(id);
  if (state) {
    await state.waitRunning(signal);
    return { process: state.spec!.process!, rootfs: state.rootfs!, userns: fromOciMappings(state.spec!.linux) };
  }
  // Finished, its records on their way out: as if they were gone already.
  if (ctx.retirements.has(id)) throw new NotFoundError(`container ${id} not found (its run has finished)`);
  let record: Awaited<ReturnType<typeof ctx.client.containers.get>>;
  try {
    record = await ctx.client.containers.get(id, { signal });
  } catch (err) {
    if (err instanceof NotFoundError) throw new NotFoundError(`container ${id} not found`, { cause: err });
    throw err;
  }
  const rootfs = record.labels[LABEL.rootfs];
  if (!record.labels[LABEL.owner] || !rootfs || !record.spec) {
    throw new NotFoundError(`container ${id} not found (it exists in namespace ${ctx.client.namespace} but was not made by ctrexec)`);
  }
  for (;;) {
    let status: string;
    try {
      status = (await ctx.client.tasks.get({ containerId: id }, { signal })).status;
    } catch (err) {
      if (err instanceof NotFoundError) throw new ContainerExitedError(`container ${id} has stopped`, { cause: err });
      throw err;
    }
    if (status === "RUNNING") break;
    if (status !== "CREATED") throw new ContainerExitedError(`container ${id} has stopped`);
    await new Promise((r) => setTimeout(r, POLL_MS));
    if (signal.aborted) throw new CanceledError(`exec into ${id} was canceled`, { cause: signal.reason });
  }
  const spec = JSON.parse(Buffer.from(record.spec.value).toString("utf8")) as Spec;
  if (!spec.process) throw new NotFoundError(`container ${id} has no process spec`);
  return { process: spec.process, rootfs, userns: fromOciMappings(spec.linux) };
}
