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
