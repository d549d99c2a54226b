import { mergeEnv } from "./spec.js";
import type { Process } from "./types.js";
import { validateArgs, validateConsoleSize, validateCwd } from "./validate.js";

/** What an exec changes in its container's process spec. */
export interface ExecProcessInput {
  args: readonly string[];
  /** `KEY=VALUE` over the container's env; a bare `KEY` unsets (as for a run). */
  env?: readonly string[] | undefined;
  /** Absolute; the container's when absent. */
  cwd?: string | undefined;
  terminal?: boolean | undefined;
  consoleSize?: { rows: number; cols: number } | undefined;
  /** Resolved in the container's root by the caller; the container's user when absent. */
  user?: { uid: number; gid: number; additionalGids: readonly number[] } | undefined;
}

/** Checks an exec's input before anything is looked up or created; execProcess checks it again. */
export function validateExecInput(input: Omit<ExecProcessInput, "user">): void {
  validateArgs(input.args, input.env ?? []);
  if (input.cwd) validateCwd(input.cwd);
  validateConsoleSize(input.consoleSize);
}

/**
 * The process spec of an exec: the container's own process (`base`, from its spec) with the exec's command,
 * terminal, working directory, user and env, checked by the same rules as generateSpec's.
 */
export function execProcess(base: Process, input: ExecProcessInput): Process {
  const process: Process = { ...base, args: [...input.args], terminal: input.terminal ?? false };
  delete process.consoleSize;
  if (input.terminal && input.consoleSize) process.consoleSize = { height: input.consoleSize.rows, width: input.consoleSize.cols };
  if (input.cwd) process.cwd = input.cwd;
  // Inherit the container's env, then override by key (reference §12.9).
  if (input.env?.length) process.env = mergeEnv(base.env ?? [], input.env);
  if (input.user) process.user = { uid: input.user.uid, gid: input.user.gid, additionalGids: [...input.user.additionalGids] };
  validateExecInput({ ...input, env: process.env ?? [] });
  return process;
}
