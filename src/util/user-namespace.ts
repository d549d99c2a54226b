import { readFileSync } from "node:fs";

let cached: boolean | undefined;

/**
 * Whether this process runs in a user namespace other than the host's (its uid_map is not the identity). Read
 * once: a Node process never changes user namespace (it is multi-threaded: setns refuses).
 */
export function inUserNamespace(): boolean {
  if (cached === undefined) {
    let map = "";
    try {
      map = readFileSync("/proc/self/uid_map", "utf8");
    } catch {
      // no /proc: the host's, as far as anyone can tell
    }
    cached = map !== "" && map.trim().split(/\s+/).join(" ") !== "0 0 4294967295";
  }
  return cached;
}

/** Root of the host: uid 0 outside any user namespace (not a rootless daemon's root, nor a container's). */
export function isHostRoot(): boolean {
  return process.geteuid?.() === 0 && !inUserNamespace();
}
