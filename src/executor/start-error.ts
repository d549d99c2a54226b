import { StartError, UnknownError } from "../errors.js";

/**
 * Turns the runtime's start failure into a StartError that says whether the command was missing (127) or not
 * executable (126), as docker does from runc's message (moby's translateContainerdStartErr).
 */
export function toStartError(err: unknown, command: string): unknown {
  if (!(err instanceof UnknownError)) return err;
  const msg = err.message;
  const runtime = msg.replace(/^.*?(exec: )/, "$1");
  if (/executable file not found|no such file or directory/i.test(msg)) {
    return new StartError(`failed to start ${JSON.stringify(command)}: ${runtime}`, "not-found", { cause: err });
  }
  if (/permission denied|not a directory|is a directory|exec format error/i.test(msg)) {
    return new StartError(`failed to start ${JSON.stringify(command)}: ${runtime}`, "not-executable", { cause: err });
  }
  if (/OCI runtime (create|exec|start) failed/.test(msg)) {
    return new StartError(`failed to start ${JSON.stringify(command)}: ${msg}`, "other", { cause: err });
  }
  return err;
}
