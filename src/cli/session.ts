import type { ContainerdExecutor, ProcessInfo, ProcessMeta } from "../index.js";
import type { Context } from "./context.js";
import { errorLine, exitCodeFor } from "./exit-codes.js";
import { forwardSignals, openTerminal } from "./terminal.js";

/**
 * Wires ctrexec's own stdio, terminal and signals to one process (run or exec), runs `work`, maps its outcome
 * to an exit code, and always puts the terminal back, stops forwarding and closes the executor.
 */
export async function withProcessSession(
  ctx: Context,
  executor: ContainerdExecutor,
  meta: ProcessMeta,
  interactive: boolean,
  work: (process: ProcessInfo, signal: AbortSignal) => Promise<number>,
): Promise<number> {
  const terminal = openTerminal(meta.tty ?? false, interactive);
  const cancel = new AbortController();
  const forwarding = forwardSignals(() => {
    ctx.stderr.write("ctrexec: third interrupt: killing the process\n");
    cancel.abort(new Error("interrupted"));
  });
  const stdin = interactive ? process.stdin : null;
  try {
    if (terminal.consoleSize) meta.consoleSize = terminal.consoleSize;
    return await work(
      {
        meta,
        stdin,
        stdout: process.stdout,
        stderr: meta.tty ? null : process.stderr,
        ...(terminal.resize ? { resize: terminal.resize } : {}),
        signals: forwarding.signals,
      },
      cancel.signal,
    );
  } catch (err) {
    const { code, print } = exitCodeFor(err);
    if (print) ctx.stderr.write(`${errorLine(err)}\n`);
    return code;
  } finally {
    forwarding.stop();
    terminal.restore();
    // Our stdin may still be open (a terminal, a pipe nobody closed): it must not keep ctrexec alive.
    if (stdin) stdin.destroy();
    await executor.close();
  }
}
