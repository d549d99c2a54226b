import { readFileSync } from "node:fs";
import { hostname } from "node:os";

/** Labels on every container ctrexec creates, so any ctrexec process can find, exec into and prune it. */
export const LABEL = {
  owner: "ctrexec.owner",
  started: "ctrexec.started",
  rootfs: "ctrexec.rootfs",
  command: "ctrexec.command",
  state: "ctrexec.state-dir",
  fifo: "ctrexec.fifo-root",
  runDir: "ctrexec.run-dir",
} as const;

/** The kernel's start time of a pid (clock ticks since boot), which tells a live owner from a reused pid. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command (which may hold spaces and parentheses) start after the last ')'.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19];
  } catch {
    return undefined;
  }
}

let self: string | undefined;
/** `host/pid/starttime` of this process. */
export function ownerId(): string {
  self ??= `${hostname()}/${process.pid}/${processStartTime(process.pid) ?? "0"}`;
  return self;
}

/** True when the owner process is alive on this host; false when it is gone; undefined for another host. */
export function ownerAlive(owner: string): boolean | undefined {
  const [host, pid, start] = owner.split("/");
  if (host !== hostname()) return undefined;
  return processStartTime(Number(pid)) === start;
}

const MAX_LABEL = 1024;

export function runLabels(options: {
  rootfs: string;
  args: readonly string[];
  stateDir: string;
  fifoRoot: string;
  runDir: string;
}): Record<string, string> {
  let command = JSON.stringify(options.args);
  if (command.length > MAX_LABEL) command = command.slice(0, MAX_LABEL - 1) + "…";
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
