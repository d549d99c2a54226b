import { readdirSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { parentPid, processStartTime } from "../util/owner.js";
import { namespaceInode } from "./layout.js";

/*
 * The daemon's processes as the host sees them. A pid alone may be reused once its process is gone, so every
 * pid kept across a wait is kept with its start time, and a pid whose start time changed is another process.
 */

/** A pid and the start time that tells it from a later process with the same pid. */
export type ProcessMark = { pid: number; start: string };

/** Every pid /proc shows now. */
export function allPids(): number[] {
  return readdirSync("/proc")
    .filter((e) => /^\d+$/.test(e))
    .map(Number);
}

/**
 * `root` and all its descendants, plus every process in the namespace `ns` (e.g. the daemon's pid namespace)
 * named by its inode: a shim reparents to the namespace's init, a process could have been entered into it
 * (nsenter) from outside the tree. Processes that cannot be looked at (another user's) are not ours anyway.
 */
export function daemonProcesses(root: number, ns: { kind: string; inode: number } | undefined): ProcessMark[] {
  const pids = allPids();
  const children = new Map<number, number[]>();
  for (const pid of pids) {
    const ppid = parentPid(pid);
    if (ppid !== undefined) children.set(ppid, [...(children.get(ppid) ?? []), pid]);
  }
  const found = new Set<number>();
  const stack = [root];
  while (stack.length > 0) {
    const pid = stack.pop()!;
    if (found.has(pid)) continue;
    found.add(pid);
    stack.push(...(children.get(pid) ?? []));
  }
  if (ns) for (const pid of pids) if (namespaceInode(pid, ns.kind) === ns.inode) found.add(pid);
  return mark([...found]);
}

/** Marks of the pids that are alive now. */
export function mark(pids: number[]): ProcessMark[] {
  const out: ProcessMark[] = [];
  for (const pid of pids) {
    const start = processStartTime(pid);
    if (start !== undefined) out.push({ pid, start });
  }
  return out;
}

/** The marked processes that still run (a zombie counts as gone: it has exited). */
export function alive(marks: ProcessMark[]): ProcessMark[] {
  return marks.filter((m) => processStartTime(m.pid) === m.start);
}

/** Sends `signal` to the marked processes that still run; one gone meanwhile is fine. */
export function signal(marks: ProcessMark[], sig: NodeJS.Signals): void {
  for (const m of alive(marks)) {
    try {
      process.kill(m.pid, sig);
    } catch {}
  }
}

/** Waits until none of `marks` runs, at most `ms`; returns those still running. */
export async function waitGone(marks: ProcessMark[], ms: number): Promise<ProcessMark[]> {
  const deadline = Date.now() + ms;
  let left = alive(marks);
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(50);
    left = alive(left);
  }
  return left;
}
