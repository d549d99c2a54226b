import { constants } from "node:os";
import type { PullOptions } from "../index.js";
import type { Context } from "./context.js";
import { flagError } from "./flags.js";
import { PullProgressView, progressModeFor } from "./pull-progress.js";

/** A pull ended by ^C or SIGTERM: ctrexec exits 128+n, as a process killed by that signal would. */
export class PullInterrupted extends Error {
  readonly exitCode: number;
  constructor(signal: NodeJS.Signals) {
    super(`pull canceled by ${signal}`);
    this.exitCode = 128 + (constants.signals[signal] ?? 0);
  }
}

/** `--platform os/arch[/variant]`, checked here so that the error names the flag. */
export function parsePlatform(value: string): string {
  if (!/^[a-z0-9]+\/[a-z0-9_]+(\/[a-z0-9]+)?$/.test(value)) throw flagError("--platform", value, "expected OS/ARCH[/VARIANT], e.g. linux/arm64/v8");
  return value;
}

export interface PullFlags {
  quiet: boolean;
  /** Written above the first progress line. */
  header: string;
  platform?: string;
  snapshotter?: string;
}

/**
 * Runs `work` with the PullOptions of the command line: the global --insecure-registry, the logger, progress on
 * stderr (stdout stays the container's, or the digest's for `pull`), and a signal that ^C and SIGTERM abort so
 * the library can take back what it started; a second one exits at once.
 */
export async function withPull<T>(ctx: Context, flags: PullFlags, work: (options: PullOptions) => Promise<T>): Promise<T> {
  const stderr = ctx.stderr as NodeJS.WritableStream & { isTTY?: boolean; columns?: number; rows?: number };
  const view = new PullProgressView(stderr, {
    mode: progressModeFor(stderr, flags.quiet),
    header: flags.header,
    ...(stderr.columns ? { columns: stderr.columns } : {}),
    ...(stderr.rows ? { rows: stderr.rows } : {}),
  });
  const cancel = new AbortController();
  let caught: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (caught) process.exit(128 + (constants.signals[signal] ?? 0));
    caught = signal;
    cancel.abort(new PullInterrupted(signal));
  };
  const signals: NodeJS.Signals[] = ["SIGINT", "SIGTERM"];
  for (const s of signals) process.on(s, onSignal);
  try {
    return await work({
      insecureRegistries: ctx.insecureRegistries,
      logger: ctx.logger,
      onProgress: (event) => view.update(event),
      signal: cancel.signal,
      ...(flags.platform !== undefined ? { platform: flags.platform } : {}),
      ...(flags.snapshotter !== undefined ? { snapshotter: flags.snapshotter } : {}),
    });
  } catch (err) {
    if (caught) throw new PullInterrupted(caught);
    throw err;
  } finally {
    for (const s of signals) process.off(s, onSignal);
    view.finish();
  }
}
