/** ctrexec: run processes in containers through containerd. */
export {
  AlreadyExistsError,
  CanceledError,
  CtrexecError,
  DeadlineExceededError,
  type ErrorCode,
  ExitError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  type PruneFailure,
  PruneIncompleteError,
  UnavailableError,
  UNKNOWN_EXIT_STATUS,
  UnknownError,
} from "./errors.js";
export {
  type CallOptions,
  ContainerdClient,
  type ContainerdClientOptions,
  DEFAULT_ADDRESS,
  DEFAULT_NAMESPACE,
} from "./containerd/client.js";
export type * from "./containerd/types.js";
export { jsonAny, PROCESS_TYPE_URL, SPEC_TYPE_URL } from "./containerd/types.js";
export { type IOConfig, ProcessIO, type ProcessIOOptions, type ProcessStreams } from "./containerd/io.js";
export { DEFAULT_RUNTIME, deleteTask, runTask, type RunTaskOptions } from "./containerd/run-task.js";
export { defaultSpec } from "./oci/defaults.js";
export type * as oci from "./oci/types.js";
export { defaultRootfsPath, ensureDefaultRootfs } from "./rootfs/default-rootfs.js";
export { type Logger, type LogLevel, silentLogger, stderrLogger } from "./util/logger.js";
export { ContainerExitedError, StartError, type StartFailure } from "./errors.js";
export {
  ContainerdExecutor,
  DEFAULT_FIFO_ROOT,
  DEFAULT_STATE_DIR,
  type ExecutorOptions,
} from "./executor/executor.js";
export type * from "./executor/types.js";
export { bindMountable, tmpfsMountable } from "./executor/mountables.js";
export type { NetworkHandle, NetworkProvider } from "./network/types.js";
export { hostNetwork, noneNetwork } from "./network/basic.js";
export type { LinuxResources, SecurityMode, Ulimit } from "./oci/spec.js";
export type { DnsConfig } from "./oci/resolv-conf.js";
export type { HostIP } from "./oci/hosts.js";
export {
  chainIds,
  DEFAULT_SNAPSHOTTER,
  type ImageConfig,
  type ResolvedImage,
  resolveImage,
  unpackImage,
  withImageDefaults,
} from "./image/image.js";
export { imageMountable, type SnapshotMountOptions, snapshotMountable } from "./image/mountables.js";
export { BridgeProvider, type BridgeOptions, defaultBridgeConfig } from "./network/bridge.js";
export { CniError } from "./network/cni.js";
export { generateSpec, type SpecInput } from "./oci/spec.js";
