import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { ResourceUsage } from "./types.js";

/*
 * cgroupfs files are made by the kernel when read and never wait on a disk, so they are read synchronously:
 * four reads on the run's path after the exit would otherwise be sixteen thread-pool round trips.
 */

/** cgroup v2 (one unified tree) or v1 (a tree per controller), as seen from this process. */
let unified: boolean | undefined;
function isUnified(): boolean {
  if (unified === undefined) {
    try {
      readFileSync("/sys/fs/cgroup/cgroup.controllers");
      unified = true;
    } catch {
      unified = false;
    }
  }
  return unified;
}

function readNumber(path: string, key?: string): number | undefined {
  try {
    const text = readFileSync(path, "utf8");
    if (key === undefined) {
      const n = Number(text.trim());
      return Number.isFinite(n) ? n : undefined;
    }
    const m = new RegExp(`^${key}\\s+(\\d+)$`, "m").exec(text);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Samples a container's cgroup (path as in spec.linux.cgroupsPath, cgroupfs layout) after its process exited
 * and before the task is deleted, when the cgroup still holds the totals. Missing files give missing fields.
 */
export function sampleUsage(cgroupsPath: string): ResourceUsage & { oomKills?: number } {
  const out: ResourceUsage & { oomKills?: number } = {};
  const set = <K extends keyof typeof out>(k: K, v: (typeof out)[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  if (isUnified()) {
    const dir = join("/sys/fs/cgroup", cgroupsPath);
    const usec = readNumber(join(dir, "cpu.stat"), "usage_usec");
    set("cpuNanos", usec === undefined ? undefined : usec * 1000);
    set("memoryPeakBytes", readNumber(join(dir, "memory.peak")));
    set("pids", readNumber(join(dir, "pids.peak")) ?? readNumber(join(dir, "pids.current")));
    set("oomKills", readNumber(join(dir, "memory.events"), "oom_kill"));
  } else {
    set("cpuNanos", readNumber(join("/sys/fs/cgroup/cpuacct", cgroupsPath, "cpuacct.usage")));
    set("memoryPeakBytes", readNumber(join("/sys/fs/cgroup/memory", cgroupsPath, "memory.max_usage_in_bytes")));
    set("pids", readNumber(join("/sys/fs/cgroup/pids", cgroupsPath, "pids.current")));
    set("oomKills", readNumber(join("/sys/fs/cgroup/memory", cgroupsPath, "memory.oom_control"), "oom_kill"));
  }
  return out;
}
