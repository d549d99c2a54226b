import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ResourceUsage } from "./types.js";

/** cgroup v2 (one unified tree) or v1 (a tree per controller), as seen from this process. */
let unified: boolean | undefined;
async function isUnified(): Promise<boolean> {
  if (unified === undefined) {
    unified = await readFile("/sys/fs/cgroup/cgroup.controllers", "utf8").then(
      () => true,
      () => false,
    );
  }
  return unified;
}

async function readNumber(path: string, key?: string): Promise<number | undefined> {
  try {
    const text = await readFile(path, "utf8");
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
export async function sampleUsage(cgroupsPath: string): Promise<ResourceUsage & { oomKills?: number }> {
  const out: ResourceUsage & { oomKills?: number } = {};
  const set = <K extends keyof typeof out>(k: K, v: (typeof out)[K] | undefined) => {
    if (v !== undefined) out[k] = v;
  };
  if (await isUnified()) {
    const dir = join("/sys/fs/cgroup", cgroupsPath);
    const usec = await readNumber(join(dir, "cpu.stat"), "usage_usec");
    set("cpuNanos", usec === undefined ? undefined : usec * 1000);
    set("memoryPeakBytes", await readNumber(join(dir, "memory.peak")));
    set("pids", (await readNumber(join(dir, "pids.peak"))) ?? (await readNumber(join(dir, "pids.current"))));
    set("oomKills", await readNumber(join(dir, "memory.events"), "oom_kill"));
  } else {
    set("cpuNanos", await readNumber(join("/sys/fs/cgroup/cpuacct", cgroupsPath, "cpuacct.usage")));
    set("memoryPeakBytes", await readNumber(join("/sys/fs/cgroup/memory", cgroupsPath, "memory.max_usage_in_bytes")));
    set("pids", await readNumber(join("/sys/fs/cgroup/pids", cgroupsPath, "pids.current")));
    set("oomKills", await readNumber(join("/sys/fs/cgroup/memory", cgroupsPath, "memory.oom_control"), "oom_kill"));
  }
  return out;
}
