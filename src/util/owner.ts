import { readFileSync } from "node:fs";
import { hostname } from "node:os";

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
/** `host/pid/starttime` of this process: who owns the containers, run dirs and namespaces it makes. */
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
