import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { unmountDetached } from "./mount.js";

/** Mount points at or below `dir`, deepest first. */
function mountsBelow(dir: string): string[] {
  return readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((l) => l.split(" ")[4] ?? "")
    .filter((m) => m === dir || m.startsWith(dir + "/"))
    .sort((a, b) => b.length - a.length);
}

/**
 * Removes a directory a dead process left, whatever it holds: what is still mounted below it is detached first,
 * so the removal never reaches into a filesystem mounted there (a rootfs, a host directory).
 */
export async function removeTree(dir: string): Promise<void> {
  for (const m of mountsBelow(dir)) await unmountDetached(m).catch(() => {});
  await rm(dir, { recursive: true, force: true });
}
