import type { ContainerdClient } from "../containerd/client.js";
import type { TaskCreator } from "../containerd/task-creator.js";
import type { HostFeatures } from "../oci/host-features.js";
import type { KeyedLimit } from "../util/keyed-limit.js";
import type { Logger } from "../util/logger.js";
import type { EnvFiles } from "./env-files.js";
import type { Networks } from "./networks.js";
import type { OomWatch } from "./oom-watch.js";
import type { ResolvedOptions } from "./options.js";
import type { Retirements } from "./retire.js";
import type { ShimPolicy } from "./shims/policy.js";

/** What the steps of a run or an exec share: one per executor, made at create(). */
export interface ExecutorContext {
  readonly client: ContainerdClient;
  readonly options: ResolvedOptions;
  /** The state dir by its real path (runc refuses a rootfs path through a symlink; mountinfo shows real paths). */
  readonly root: string;
  readonly logger: Logger;
  readonly host: HostFeatures;
  readonly env: EnvFiles;
  readonly networks: Networks;
  readonly retirements: Retirements;
  readonly tasks: TaskCreator;
  readonly shims: ShimPolicy;
  /**
   * runc calls in flight per container's shim (an exec's Start). containerd 1.6's shim wakes every runc call
   * in flight for each exit it reaps, with a short timeout per busy one: past ~20 calls at once in one shim
   * they stall each other (docs/reliability.md).
   */
  readonly shimTurns: KeyedLimit;
  /** This namespace's FIFO directory under the FIFO root. */
  readonly fifos: string;
  readonly oom: OomWatch;
}
