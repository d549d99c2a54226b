import { CtrexecError, ExitError, StartError } from "../index.js";
import { PullInterrupted } from "./pulling.js";

/** ctrexec itself failed (bad flag, containerd unreachable, invalid input), as docker's 125. */
export const EXIT_OWN_FAILURE = 125;
export const EXIT_CANNOT_EXECUTE = 126;
export const EXIT_NOT_FOUND = 127;

/** The exit code for an error from run/exec, and whether ctrexec should print it. */
export function exitCodeFor(err: unknown): { code: number; print: boolean } {
  if (err instanceof ExitError) return { code: err.exitCode, print: false };
  if (err instanceof PullInterrupted) return { code: err.exitCode, print: true };
  if (err instanceof StartError) {
    return {
      code: err.reason === "not-found" ? EXIT_NOT_FOUND : err.reason === "not-executable" ? EXIT_CANNOT_EXECUTE : EXIT_OWN_FAILURE,
      print: true,
    };
  }
  return { code: EXIT_OWN_FAILURE, print: true };
}

/** One line for stderr: `ctrexec: <what went wrong>`. */
export function errorLine(err: unknown): string {
  const msg = CtrexecError.is(err) || err instanceof Error ? err.message : String(err);
  return `ctrexec: ${msg.split("\n")[0]}`;
}
