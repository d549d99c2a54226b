import { join } from "node:path";
import type { ContainerdClient } from "../../containerd/client.js";
import { ProcessIO } from "../../containerd/io.js";
import { CLEANUP_RPC_MS, deleteContainerRecord, deleteTask } from "../../containerd/task-cleanup.js";
import { jsonAny, SPEC_TYPE_URL } from "../../containerd/types.js";
import { AlreadyExistsError, outcomeUnknown } from "../../errors.js";
import { mountFlagsOf } from "../../fs/idmap.js";
import { withLockedFlags } from "../../oci/mounts.js";
import { serializeSpec } from "../../oci/serialize.js";
import { generateSpec } from "../../oci/spec.js";
import type { Spec } from "../../oci/types.js";
import type { Span } from "../../util/tracing.js";
import type { ExecutorContext } from "../context.js";
import { LABEL, runLabels } from "../labels.js";
import { awaitRetiredRecord } from "../retire.js";
import { SHIM_GROUP_ANNOTATION } from "../shims/group-name.js";
import type { ShimLease } from "../shims/policy.js";
import { toStartError } from "../start-error.js";
import type { RunRequest } from "../types.js";
import { closeRootDir, USERNS_ROOT_DIR } from "../userns-root.js";
import { ioRelease, type RunDisposal } from "./disposal.js";
import { type PreparedRun, type SpecBase, type TaskPresence, throwIfCanceled } from "./prepare.js";

/** The run's task as the shim sees it, for the shim lease's end. */
export interface TaskState extends TaskPresence {
  /** The run got as far as asking its shim for a task: a failure after that may be the shim's. */
  shimAsked: boolean;
}

/** The container as created: its spec and its process's IO, the task created but not started. */
export interface CreatedContainer {
  spec: Spec;
  io: ProcessIO;
}

/**
 * Creates the run's container: the spec, the FIFOs (made while containerd stores the record: neither needs the
 * other), the container record, and the task in the shim the lease names. Creations never take the caller's
 * signal: canceled halfway, containerd may still make the record or the task, which nothing would then
 * delete. A cancel is acted on once they returned.
 */
export async function createContainer(
  ctx: ExecutorContext,
  id: string,
  req: RunRequest,
  base: SpecBase,
  prepared: PreparedRun,
  lease: ShimLease,
  disposal: RunDisposal,
  task: TaskState,
  span: Span,
  signal: AbortSignal,
): Promise<CreatedContainer> {
  const spec = generateSpec(
    {
      ...base,
      ...(lease.group ? { annotations: { [SHIM_GROUP_ANNOTATION]: lease.group } } : {}),
      user: { uid: prepared.user.uid, gid: prepared.user.gid, additionalGids: prepared.user.additionalGids },
      network: prepared.network.namespace,
      resolvConfPath: prepared.resolvConfPath,
      hostsPath: prepared.hostsPath,
      mounts: prepared.mounts,
      // runc mounts the root inside the container's own mount namespace, which dies with the process: once
      // it has exited, nothing outside references the root, and the task can be deleted later.
      rootPath: prepared.rootfs,
      userns: prepared.userns,
    },
    ctx.host,
  );
  // In a user namespace, runc's read-only remount of a bind fails unless it repeats the flags its source's
  // mount has (the kernel locks them): BuildKit's fix-up.
  if (prepared.userns && spec.mounts) spec.mounts = withLockedFlags(spec.mounts, lockedFlagsOf);
  span.addEvent("Spec generated");

  const labels = {
    ...req.labels,
    ...runLabels({ rootfs: prepared.rootfs, args: spec.process!.args, stateDir: ctx.root, fifoRoot: ctx.fifos, runDir: prepared.runDir }),
    ...lease.labels,
  };
  const p = req.process;
  const ioReady = ProcessIO.create({
    fifoRoot: ctx.fifos,
    id,
    stdin: p.stdin,
    stdout: p.stdout,
    stderr: p.stderr,
    terminal: p.meta.tty,
    logger: ctx.logger,
  });
  ioReady.catch(() => {}); // awaited below; a failure must not count as unhandled meanwhile
  disposal.defer("close IO", ioRelease(ctx.retirements, ioReady));

  await createRecord(
    ctx,
    { id, labels, runtime: { name: ctx.options.runtime }, spec: jsonAny(SPEC_TYPE_URL, serializeSpec(spec)) },
    prepared.runDir,
    signal,
  );
  disposal.defer(
    "delete container",
    // After a hand-over, the retirement of the task deletes the record too.
    { now: () => deleteContainer(ctx, id, task).then(() => span.addEvent("Container deleted")), background: undefined },
    { failsRun: true },
  );
  span.addEvent("Container record created");
  const io = await ioReady;
  span.addEvent("IO created");
  throwIfCanceled(id, signal);

  // What containerd reported about an earlier container with this id is not this run's.
  ctx.oom.forget(id);
  task.shimAsked = true;
  try {
    await ctx.tasks.create({ containerId: id, ...io.config });
  } catch (err) {
    span.addEvent("Container start failed", { "error.message": (err as Error).message });
    // A deadline or a lost connection does not say whether the task was made: delete it if it was.
    if (outcomeUnknown(err)) task.gone = await deleteTask(ctx.client, id, ctx.logger).catch(() => false);
    throw toStartError(err, spec.process!.args[0] ?? "");
  }
  task.gone = false;
  disposal.defer(
    "delete task",
    {
      now: async () => {
        task.gone = await deleteTask(ctx.client, id, ctx.logger);
        span.addEvent("Task deleted");
      },
      background: () => {
        const { gate, taskDone } = lease.retire(id);
        ctx.retirements.retire(id, taskDone, gate);
        span.addEvent("Task handed over for deletion");
      },
    },
    { failsRun: true },
  );
  if (prepared.userns) closeRootDir(join(prepared.runDir, USERNS_ROOT_DIR));
  span.addEvent("Container created");
  throwIfCanceled(id, signal);
  return { spec, io };
}

/** Creates the container record; the same id right after a run of another executor or process waits for that run's records to go. */
async function createRecord(
  ctx: ExecutorContext,
  record: Parameters<ContainerdClient["containers"]["create"]>[0],
  runDir: string,
  signal: AbortSignal,
): Promise<void> {
  const create = () =>
    ctx.client.containers.create(record).catch(async (err: unknown) => {
      // A deadline or a lost connection does not say whether the record was made: remove it if it is ours.
      if (outcomeUnknown(err)) await removeRecordIfOurs(ctx.client, record.id, runDir);
      throw err;
    });
  try {
    await create();
  } catch (err) {
    if (!(err instanceof AlreadyExistsError) || !(await awaitRetiredRecord(ctx.client, record.id, signal))) throw err;
    await create();
  }
}

/** Deletes record `id` if it exists and is this run's (its run dir label): after a create whose outcome is unknown. */
async function removeRecordIfOurs(client: ContainerdClient, id: string, runDir: string): Promise<void> {
  const labels = await client.containers.get(id, { timeoutMs: CLEANUP_RPC_MS }).then(
    (c) => c.labels,
    () => undefined,
  );
  if (labels?.[LABEL.runDir] === runDir) await deleteContainerRecord(client, id).catch(() => {});
}

async function deleteContainer(ctx: ExecutorContext, id: string, task: TaskPresence): Promise<void> {
  if (!task.gone) {
    // Deleting the record now would orphan the task; keep it, and try again until containerd lets us (and if
    // this process dies first, prune finishes it).
    ctx.logger.error("the task could not be deleted; will retry in the background", { id });
    ctx.retirements.retryLater(id);
    return;
  }
  await deleteContainerRecord(ctx.client, id);
}

/** A bind source's mount flags; undefined where it cannot be looked at (runc will say what is wrong). */
function lockedFlagsOf(source: string): ReturnType<typeof mountFlagsOf> | undefined {
  try {
    return mountFlagsOf(source);
  } catch {
    return undefined;
  }
}
