import { constants } from "node:os";
import type { ContainerdClient } from "../../containerd/client.js";
import type { ProcessIO } from "../../containerd/io.js";
import { killAll } from "../../containerd/task-cleanup.js";
import type { ExitStatus, ProcessRef } from "../../containerd/types.js";
import { waitSurvivingRestarts } from "../../containerd/wait.js";
import { CanceledError, DeadlineExceededError, InvalidArgumentError, UNKNOWN_EXIT_STATUS } from "../../errors.js";
import type { Logger } from "../../util/logger.js";
import type { Span } from "../../util/tracing.js";
import { toStartError } from "../start-error.js";
import type { WinSize } from "../types.js";

/** How long a SIGKILLed process may take to be reported gone before we give up on it (BuildKit: 10 s). */
export const KILL_TIMEOUT_MS = 10_000;
const RPC_MS = 30_000;

export interface RunProcessOptions {
  client: ContainerdClient;
  ref: ProcessRef;
  io: ProcessIO;
  /** The command, for error messages. */
  command: string;
  logger: Logger;
  span: Span;
  signal?: AbortSignal | undefined;
  resize?: AsyncIterable<WinSize> | undefined;
  signals?: AsyncIterable<NodeJS.Signals | number> | undefined;
  tty?: boolean | undefined;
  initialSize?: WinSize | undefined;
  onStarted?: ((pid: number) => void) | undefined;
  /** How long to wait for a SIGKILLed process's exit. Default KILL_TIMEOUT_MS. */
  killTimeoutMs?: number | undefined;
  /** How long to wait for containerd to come back when it restarts mid-run. Default 60 s. */
  reconnectBoundMs?: number | undefined;
  /** Makes the Start call when the process's shim has room for it (the executor's per-shim limit). */
  startTurn?: (<T>(start: () => Promise<T>) => Promise<T>) | undefined;
}

export interface ProcessOutcome {
  exitCode: number;
  /** The caller's signal fired while the process ran (it was SIGKILLed). */
  canceled: boolean;
  /** Set when the exit status could not be read (exitCode is then 255). */
  waitError?: unknown;
}

export function signalNumber(sig: NodeJS.Signals | number): number {
  if (typeof sig === "number") {
    if (Number.isInteger(sig) && sig > 0 && sig < 65) return sig;
  } else {
    const n = (constants.signals as Record<string, number | undefined>)[sig.toUpperCase()];
    if (n !== undefined) return n;
  }
  throw new InvalidArgumentError(`unknown signal ${JSON.stringify(sig)}`, { field: "signals" });
}

/**
 * Feeds an async iterable to `apply` until `stop` fires; never blocks the caller, and stops the iterator on
 * the way out so a producer is not left waiting for a reader that went away.
 */
function pump<T>(source: AsyncIterable<T> | undefined, stop: AbortSignal | undefined, apply: (v: T) => Promise<void>): void {
  if (!source || !stop) return;
  const it = source[Symbol.asyncIterator]();
  const stopped = new Promise<"stop">((resolve) => stop.addEventListener("abort", () => resolve("stop"), { once: true }));
  void (async () => {
    try {
      for (;;) {
        const next = await Promise.race([it.next(), stopped]);
        if (next === "stop" || next.done) break;
        await apply(next.value);
      }
    } catch {
      // a failing producer ends its pump, not the run
    } finally {
      void Promise.resolve(it.return?.()).catch(() => {});
    }
  })();
}

/**
 * Starts a created process (the init task or an exec) and follows it to its exit, like BuildKit's runProcess
 * (reference §4): Wait is issued before Start; stdin is closed only after its EOF; resize and signal pumps never
 * block the exit path; the caller's signal SIGKILLs the process and, if no exit is reported within 10 s,
 * rejects with "failed to kill process on cancel". Output is complete when this resolves.
 */
export async function runProcess(o: RunProcessOptions): Promise<ProcessOutcome> {
  const { client, ref, io, signal, logger } = o;
  const killTimeoutMs = o.killTimeoutMs ?? KILL_TIMEOUT_MS;
  if (signal?.aborted) throw new CanceledError("canceled before the process started", { cause: signal.reason });

  let waitError: unknown;
  const exited: Promise<ExitStatus> = waitSurvivingRestarts(client, ref, {
    logger,
    ...(o.reconnectBoundMs !== undefined ? { boundMs: o.reconnectBoundMs } : {}),
  }).catch((err: unknown) => {
    waitError = err;
    return { exitStatus: UNKNOWN_EXIT_STATUS, exitedAt: null };
  });
  const isInit = !ref.execId;
  if (o.tty && o.initialSize && isInit) {
    await client.tasks.resizePty({ ...ref, width: o.initialSize.cols, height: o.initialSize.rows }, { timeoutMs: RPC_MS });
  }
  let pid: number;
  try {
    const start = () => {
      // Canceled while it waited for its turn: never started.
      if (signal?.aborted) throw new CanceledError("canceled before the process started", { cause: signal.reason });
      return client.tasks.start(ref, { timeoutMs: RPC_MS });
    };
    pid = await (o.startTurn ? o.startTurn(start) : start());
  } catch (err) {
    // Let go of our FIFO ends first: a shim whose exec never started can otherwise wait on its IO copy and
    // hold up DeleteProcess (containerd#1162).
    io.cancel();
    o.span.addEvent("Container start failed", { "error.message": (err as Error).message });
    throw toStartError(err, o.command);
  }
  let killTimer: NodeJS.Timeout | undefined;
  let onKillTimeout: (() => void) | undefined;
  const killTimedOut = new Promise<"timeout">((resolve) => (onKillTimeout = () => resolve("timeout")));
  const onAbort = () => {
    // SIGKILL everything of an init process (execs too); just the process for an exec.
    (isInit
      ? killAll(client, ref, { timeoutMs: killTimeoutMs }, logger)
      : client.tasks.kill({ ...ref, signal: 9 }, { timeoutMs: killTimeoutMs })
    ).catch((err: unknown) => logger.debug("kill on cancel failed", { error: err }));
    io.cancel();
    killTimer = setTimeout(() => onKillTimeout?.(), killTimeoutMs);
  };
  // Listen before telling anyone the process started: a caller may cancel from onStarted itself.
  if (signal?.aborted) onAbort();
  else signal?.addEventListener("abort", onAbort, { once: true });
  try {
    o.onStarted?.(pid);
  } catch (err) {
    logger.warn("an onStarted callback threw; the process runs on", { error: err });
  }
  io.closeStdinWhenDone(() => client.tasks.closeIO(ref, { timeoutMs: RPC_MS }));

  // Only for callers that send resizes or signals (aborting makes a DOMException, whose stack capture every run would pay).
  const events = o.resize || o.signals ? new AbortController() : undefined;
  if (o.tty && o.initialSize && !isInit) {
    client.tasks
      .resizePty({ ...ref, width: o.initialSize.cols, height: o.initialSize.rows }, { timeoutMs: RPC_MS })
      .catch((err: unknown) => logger.warn("failed to set the initial terminal size", { error: err }));
  }
  pump(o.resize, events?.signal, async (size) => {
    await client.tasks
      .resizePty({ ...ref, width: size.cols, height: size.rows }, { signal: events?.signal, timeoutMs: RPC_MS })
      .catch((err: unknown) => logger.warn(`failed to resize ${ref.execId || ref.containerId}`, { error: err }));
  });
  pump(o.signals, events?.signal, async (sig) => {
    let n: number;
    try {
      n = signalNumber(sig);
    } catch (err) {
      logger.warn("ignoring a signal", { error: err });
      return;
    }
    await client.tasks
      .kill({ ...ref, signal: n }, { signal: events?.signal, timeoutMs: RPC_MS })
      .catch((err: unknown) => logger.warn(`failed to signal ${ref.execId || ref.containerId}`, { error: err }));
  });

  try {
    const status = await Promise.race([exited, killTimedOut]);
    if (status === "timeout") {
      o.span.addEvent("Container kill timeout");
      io.cancel();
      throw new DeadlineExceededError("failed to kill process on cancel", { cause: signal?.reason });
    }
    o.span.addEvent("Container exited", { "exit.code": status.exitStatus });
    const canceled = signal?.aborted ?? false;
    // No exit was seen (containerd stayed away): the process may live on with its output open, and waiting for
    // that output to end could take forever. What it wrote so far was copied; the rest is let go.
    if (waitError !== undefined) io.cancel();
    if (!canceled) await io.wait();
    return { exitCode: status.exitStatus, canceled, ...(waitError !== undefined ? { waitError } : {}) };
  } finally {
    signal?.removeEventListener("abort", onAbort);
    clearTimeout(killTimer);
    events?.abort();
  }
}
