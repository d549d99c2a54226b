import type { ContainerdClient } from "../../containerd/client.js";
import type { TaskCreator } from "../../containerd/task-creator.js";
import type { Logger } from "../../util/logger.js";
import { offShims } from "./none.js";
import type { ShimPolicy, ShimSharing } from "./policy.js";
import { reuseShims } from "./reuse.js";
import { warmShims } from "./warm.js";

/** What the warm pool needs to start its anchors. */
export interface ShimPolicyDeps {
  client: ContainerdClient;
  tasks: TaskCreator;
  /** The read-only rootfs of the warm pool's anchors (the default rootfs), asked for only when one starts. */
  rootfs: () => Promise<string>;
  runtime: string;
  logger: Logger;
}

/** The executor's shim policy for the resolved `shims` option. */
export function createShimPolicy(sharing: ShimSharing, deps: ShimPolicyDeps): ShimPolicy {
  switch (sharing.kind) {
    case "off":
      return offShims();
    case "reuse":
      return reuseShims({ idleMs: sharing.idleMs });
    case "warm":
      return warmShims({ ...deps, size: sharing.size, idleMs: sharing.idleMs });
  }
}
