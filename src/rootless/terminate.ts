import { readFileSync, statSync } from "node:fs";
import { UnknownError } from "../errors.js";
import type { Logger } from "../util/logger.js";
import { namespaceInode, type RootlessLayout } from "./layout.js";
import { allPids, daemonProcesses, type ProcessMark, signal, waitGone } from "./processes.js";
import { IN_NAMESPACE_NAME } from "./rootlesskit-args.js";

/** What rootlesskit gets after SIGTERM, and again after SIGKILL: containerd shuts down in well under a second. */
export const STOP_WAIT_MS = 5_000;

/** Whether `pid` runs rootlesskit with this layout's state dir: a stuck rootlesskit of ours, not a reused pid. */
export function isOurKit(pid: number, layout: RootlessLayout): boolean {
  try {
    const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    // The state dir is rootless nerdctl's too: only our in-namespace script's name says the kit is ours.
    return argv[0]?.endsWith("rootlesskit") === true && argv.includes(`--state-dir=${layout.kitStateDir}`) && argv.includes(IN_NAMESPACE_NAME);
  } catch {
    return false;
  }
}

/**
 * Ends a daemon: SIGTERM to rootlesskit, which passes it on to containerd (a clean shutdown), SIGKILL after a
 * bounded wait. With --pidns, when the namespace's init goes the kernel kills everything in it (shims,
 * containers); whatever of the daemon is still left (found before the signal: rootlesskit's tree and the pid
 * namespace's members, e.g. slirp4netns) is killed too, so nothing of it survives a stop.
 */
export async function terminate(kitPid: number, childPid: number | undefined, log: Logger): Promise<void> {
  const pidns = childPid !== undefined ? namespaceInode(childPid, "pid") : undefined;
  const marks = daemonProcesses(kitPid, pidns !== undefined ? { kind: "pid", inode: pidns } : undefined);
  const kit = marks.filter((m) => m.pid === kitPid);
  signal(kit, "SIGTERM");
  let left = await waitGone(kit, STOP_WAIT_MS);
  if (left.length > 0) {
    log.warn("rootlesskit did not exit within 5 s of SIGTERM; sending SIGKILL", { pid: kitPid });
    signal(left, "SIGKILL");
    left = await waitGone(left, STOP_WAIT_MS);
    if (left.length > 0) throw new UnknownError(`rootlesskit (pid ${kitPid}) still runs 5 s after SIGKILL`);
  }
  await killLeftovers(marks, log);
}

async function killLeftovers(marks: ProcessMark[], log: Logger): Promise<void> {
  let left = await waitGone(marks, STOP_WAIT_MS);
  if (left.length === 0) return;
  log.warn("processes of the rootless daemon outlived rootlesskit; killing them", { pids: left.map((m) => m.pid) });
  signal(left, "SIGKILL");
  left = await waitGone(left, STOP_WAIT_MS);
  if (left.length > 0) throw new UnknownError(`processes of the rootless daemon still run after SIGKILL: pids ${left.map((m) => m.pid).join(", ")}`);
}

/** This user's rootlesskit processes started for this layout (isOurKit), recorded or not. */
export function ourKits(layout: RootlessLayout): number[] {
  const uid = process.getuid?.();
  return allPids().filter((pid) => {
    try {
      return statSync(`/proc/${pid}`).uid === uid && isOurKit(pid, layout);
    } catch {
      return false;
    }
  });
}

/**
 * Ends the rootlesskits of this layout that no record names: a start interrupted (^C, a kill) after it spawned
 * rootlesskit and before containerd answered leaves one, which would keep its socket and hold the next start.
 */
export async function endUnrecordedKits(layout: RootlessLayout, recorded: number | undefined, log: Logger): Promise<void> {
  for (const pid of ourKits(layout)) {
    if (pid === recorded) continue;
    log.warn("ending a rootlesskit no record names (an interrupted start)", { pid });
    await terminate(pid, undefined, log);
  }
}
