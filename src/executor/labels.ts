import { ownerId } from "../util/owner.js";

export { ownerAlive, ownerId, processStartTime } from "../util/owner.js";

/** Labels on every container ctrexec creates, so any ctrexec process can find, exec into and prune it. */
export const LABEL = {
  owner: "ctrexec.owner",
  started: "ctrexec.started",
  rootfs: "ctrexec.rootfs",
  command: "ctrexec.command",
  state: "ctrexec.state-dir",
  fifo: "ctrexec.fifo-root",
  runDir: "ctrexec.run-dir",
  /** The run started its shim and, once exited, keeps it for the next runs (shims/reuse.ts). */
  shimFounder: "ctrexec.shim-founder",
} as const;

const MAX_LABEL = 1024;

export function runLabels(options: {
  rootfs: string;
  args: readonly string[];
  stateDir: string;
  fifoRoot: string;
  runDir: string;
}): Record<string, string> {
  let command = JSON.stringify(options.args);
  if (command.length > MAX_LABEL) command = `${command.slice(0, MAX_LABEL - 1)}…`;
  return {
    [LABEL.owner]: ownerId(),
    [LABEL.started]: new Date().toISOString(),
    [LABEL.rootfs]: options.rootfs,
    [LABEL.command]: command,
    [LABEL.state]: options.stateDir,
    [LABEL.fifo]: options.fifoRoot,
    [LABEL.runDir]: options.runDir,
  };
}
