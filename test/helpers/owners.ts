import { ownerId } from "../../src/util/owner.js";

/**
 * An owner of this boot and pid namespace that names no process (pids never get this high): certainly dead,
 * wherever the tests run. An owner in the older `host/pid/starttime` form is dead only to a caller that sees
 * every process (the initial pid namespace): in a container's pid namespace it is unknown.
 */
export function deadOwner(): string {
  const f = ownerId().split("/");
  f.splice(-5, 2, "999999999", "0");
  return f.join("/");
}
