/** Rootless mode's public part: where a user's rootless containerd lives, finding it, and entering its namespaces. */

export {
  type RootlessOptions,
  type RootlessStatus,
  rootlessStatus,
  type StartRootlessOptions,
  startRootless,
  stopRootless,
} from "./daemon.js";
export {
  enterArgs,
  findRootless,
  inUserNamespace,
  type RootlessDaemon,
  type RootlessLayout,
  type RootlessRecord,
  rootlessLayout,
} from "./layout.js";
