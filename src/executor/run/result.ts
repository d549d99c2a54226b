import { ExitError, UnavailableError } from "../../errors.js";
import type { ProcessMeta, RunResult } from "../types.js";
import type { ProcessOutcome } from "./process.js";

/**
 * What run() or exec() settles with: the result when the exit code is valid for `meta`, else the error that
 * says why not (a lost containerd, a failed wait, a cancel with its reason, or the exit code itself).
 */
export function runResult(
  id: string,
  outcome: ProcessOutcome,
  meta: Pick<ProcessMeta, "validExitCodes">,
  signal: AbortSignal,
  usage: RunResult["usage"],
  oomKilled: boolean,
): RunResult {
  const valid = meta.validExitCodes?.length ? meta.validExitCodes : [0];
  if (outcome.waitError === undefined && valid.includes(outcome.exitCode)) return { id, exitCode: outcome.exitCode, usage };
  if (outcome.waitError instanceof UnavailableError) throw outcome.waitError;
  if (outcome.waitError !== undefined) {
    throw new ExitError(outcome.exitCode, {
      cause: outcome.waitError,
      message: `failure waiting for process: ${(outcome.waitError as Error).message}`,
    });
  }
  if (outcome.canceled) {
    const reason = signal.reason as unknown;
    const why = reason instanceof Error ? reason.message : String(reason);
    throw new ExitError(outcome.exitCode, { cause: reason, oomKilled, message: `exit code: ${outcome.exitCode}: canceled: ${why}` });
  }
  throw new ExitError(outcome.exitCode, { oomKilled });
}
