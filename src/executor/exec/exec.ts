import { randomBytes } from "node:crypto";
import { ProcessIO } from "../../containerd/io.js";
import { deleteExecProcess } from "../../containerd/task-cleanup.js";
import { jsonAny, PROCESS_TYPE_URL } from "../../containerd/types.js";
import { CanceledError } from "../../errors.js";
import { execProcess, validateExecInput } from "../../oci/exec-process.js";
import { serializeSpec } from "../../oci/serialize.js";
import { getUser, processGids } from "../../oci/user.js";
import { assertUserMapped } from "../../oci/userns.js";
import { startSpan } from "../../util/tracing.js";
import { validateContainerId } from "../container-id.js";
import type { ExecutorContext } from "../context.js";
import { exitedOr } from "../exec-exited.js";
import { ioRelease, RunDisposal } from "../run/disposal.js";
import { runProcess } from "../run/process.js";
import { runResult } from "../run/result.js";
import type { RunState } from "../running.js";
import type { ExecOptions, ProcessInfo } from "../types.js";
import { execTarget } from "./target.js";

/**
 * Runs another process in a running container, from the lookup of its container to the deletion of the exec
 * process (BuildKit never deletes them, reference §12.6). The same disposal as a run's: after a seen exit,
 * the exec process and its FIFO directory go in the background.
 */
export async function runExec(
  ctx: ExecutorContext,
  running: ReadonlyMap<string, RunState>,
  id: string,
  proc: ProcessInfo,
  options: ExecOptions,
  signal: AbortSignal,
): Promise<void> {
  validateContainerId(id);
  const meta = proc.meta;
  validateExecInput({ args: meta.args ?? [], env: meta.env, cwd: meta.cwd, consoleSize: meta.consoleSize });
  const target = await execTarget(ctx, running, id, signal);
  const user = meta.user ? getUser(target.rootfs, meta.user) : undefined;
  // runc would fail with a bare EINVAL from setuid: say which id the container's user namespace lacks.
  if (user && target.userns) assertUserMapped(target.userns, { uid: user.uid, gid: user.gid, additionalGids: processGids(user) });
  const process = execProcess(target.process, {
    args: meta.args,
    env: meta.env,
    cwd: meta.cwd,
    terminal: meta.tty,
    consoleSize: meta.consoleSize,
    user: user && { uid: user.uid, gid: user.gid, additionalGids: processGids(user) },
  });

  const execId = `exec${randomBytes(8).toString("hex")}`;
  const span = startSpan(ctx.options.tracer, "ctrexec.exec", { "container.id": id, "exec.id": execId });
  const disposal = new RunDisposal(ctx.logger);
  try {
    // The shim opens an exec's FIFOs at Start: they are made while containerd registers the exec.
    const streams = { fifoRoot: ctx.fifos, id: `${id}.${execId}`, stdin: proc.stdin, stdout: proc.stdout, stderr: proc.stderr, terminal: meta.tty };
    const planned = ProcessIO.plan(streams);
    const ioReady = ProcessIO.create({ ...streams, planned, logger: ctx.logger });
    ioReady.catch(() => {}); // awaited below; a failure must not count as unhandled meanwhile
    disposal.defer("close IO", ioRelease(ctx.retirements, ioReady));
    // Not the caller's signal, as for a run's creations: a canceled Exec may still register the process.
    const register = ctx.client.tasks.exec({ containerId: id, execId, spec: jsonAny(PROCESS_TYPE_URL, serializeSpec(process)), ...planned.config });
    // The container's process may have exited since execTarget looked.
    await register.catch(async (err: unknown) => Promise.reject(await exitedOr(ctx.client, id, err)));
    span.addEvent("Exec registered");
    disposal.defer("delete exec process", {
      now: () => deleteExecProcess(ctx.client, id, execId),
      background: () => ctx.retirements.retireExec(id, execId),
    });
    if (signal.aborted) throw new CanceledError(`exec into ${id} was canceled before it started`, { cause: signal.reason });
    const io = await ioReady;
    span.addEvent("IO created");
    const outcome = await runProcess({
      client: ctx.client,
      ref: { containerId: id, execId },
      io,
      command: meta.args[0] ?? "",
      logger: ctx.logger,
      span,
      signal,
      resize: proc.resize,
      signals: proc.signals,
      tty: meta.tty,
      initialSize: meta.consoleSize,
      reconnectBoundMs: ctx.options.reconnectBoundMs,
      onStarted: (pid) => {
        span.addEvent("Exec started");
        options.onStarted?.({ id, execId, pid });
      },
      startTurn: <T>(start: () => Promise<T>) => ctx.shimTurns.run(id, start),
    }).catch(async (err: unknown) => Promise.reject(await exitedOr(ctx.client, id, err)));
    if (!ctx.options.awaitCleanup && outcome.waitError === undefined) disposal.retireInBackground();
    runResult(id, outcome, meta, signal, {}, false);
  } finally {
    await disposal.release({ succeeded: true });
    span.end();
  }
}
