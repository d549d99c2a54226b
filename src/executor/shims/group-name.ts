import { randomBytes } from "node:crypto";

/** The runc v2 shim hosts every container whose spec carries the same value of this annotation. */
export const SHIM_GROUP_ANNOTATION = "io.containerd.runc.v2.group";

/**
 * A shim group name (or the prefix of this process's group names) no other executor on this containerd uses:
 * a run whose group names another executor's shim is created in that shim. The pid is only for people
 * reading `ps`; where executors run in containers many are pid 1, so 96 random bits make the name unique.
 * Its length costs nothing: the shim's socket is named by a hash of the group (native/shim-launcher.c).
 */
export function uniqueShimGroupName(): string {
  return `ctrexec-${process.pid}-${randomBytes(12).toString("hex")}`;
}
