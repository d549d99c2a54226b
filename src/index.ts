/**
 * ctrexec: run processes in containers through containerd. This is the stable public API (docs/api.md).
 * The layers below it are reachable as `ctrexec/containerd` and `ctrexec/oci`: lower-level, and they may change
 * between minor versions.
 *
 * One statement per module, in path order; docs/api.md lists the same exports by what they are for.
 */

export type {
  /** The containerd client (constructed from `ctrexec/containerd`) that ExecutorOptions.client, prune, listRuns and the image helpers take. */
  ContainerdClient,
} from "./containerd/client.js";
export type {
  /** An OCI content descriptor (media type, digest, size), as in a ResolvedImage. */
  Descriptor,
  /** A containerd-style mount (type, source, options; no destination), as a MountRef hands out. */
  Mount,
} from "./containerd/types.js";
export {
  /** Something of that name exists already (e.g. a container id in use). */
  AlreadyExistsError,
  /** The caller's abort signal ended the operation. */
  CanceledError,
  /** `exec` into a run whose process is gone. */
  ContainerExitedError,
  /** The base class; `code` is stable, `CtrexecError.is(err)` also recognises errors of another copy of ctrexec. */
  CtrexecError,
  /** Content did not match its digest or size: a corrupt or truncated download. */
  DataLossError,
  /** A deadline passed. */
  DeadlineExceededError,
  /** The stable codes of CtrexecError. */
  type ErrorCode,
  /** A process exited with a code that does not count as success. */
  ExitError,
  /** The system is not in a state that allows the operation. */
  FailedPreconditionError,
  /** Bad input; `field` names the offending option. */
  InvalidArgumentError,
  /** Something named does not exist (a container, an image, a snapshot). */
  NotFoundError,
  /** One thing prune could not remove, and why. */
  type PruneFailure,
  /** prune removed what it could but something is left; says what and why. */
  PruneIncompleteError,
  /** The runtime could not start the process; `reason` tells a missing command from a non-executable one. */
  StartError,
  /** StartError's reason: "not-found", "not-executable" or "other". */
  type StartFailure,
  /** containerd's exit status for "could not be determined" (255). */
  UNKNOWN_EXIT_STATUS,
  /** A registry wants credentials it was not given, or refused those it was. */
  UnauthenticatedError,
  /** containerd or a registry cannot be reached (or a registry failed after retries). */
  UnavailableError,
  /** Anything else, in the daemon's or runtime's own words. */
  UnknownError,
} from "./errors.js";
export {
  /** Options of diagnoseHost. */
  type DiagnoseOptions,
  /** The setup an executor would run on: containerd, runtime and shim launcher, cgroups, security, network, dirs. */
  diagnoseHost,
  /** What diagnoseHost reports. */
  type HostDiagnosis,
} from "./executor/diagnose.js";
export {
  /** Runs processes in containers through containerd with BuildKit's semantics: `create`, `run`, `exec`, `close`. */
  ContainerdExecutor,
} from "./executor/executor.js";
export {
  /** One run by container id; NotFoundError when ctrexec did not make it. */
  getRun,
  /** The runs in a namespace made by any ctrexec process, with their state and labels. */
  listRuns,
  /** A run as listRuns and getRun describe it. */
  type RunInfo,
} from "./executor/list-runs.js";
export {
  /** A host directory (or file), bind-mounted. */
  bindMountable,
  /** A fresh tmpfs, optionally of a given size. */
  tmpfsMountable,
} from "./executor/mountables.js";
export {
  /** Where FIFO directories go unless given `fifoRoot`: /run/ctrexec/fifo. */
  DEFAULT_FIFO_ROOT,
  /** The state dir an executor uses unless given `root`: /var/lib/ctrexec. */
  DEFAULT_STATE_DIR,
  /** Options of `ContainerdExecutor.create`. */
  type ExecutorOptions,
  /** How runs share containerd's shims: "reuse" (default), "off", or { warm: n | "auto" }. */
  type ShimsOption,
} from "./executor/options.js";
export {
  /** Options of prune: client, state dir, FIFO root. */
  type PruneOptions,
  /** Removes what runs of dead ctrexec processes left in a namespace; returns what it removed. */
  prune,
} from "./executor/prune.js";
export type {
  /** Options of `exec`: abort signal, start callback. */
  ExecOptions,
  /** Something that can be mounted: a host directory, a tmpfs, an image, a snapshot, or your own. */
  Mountable,
  /** What a Mountable hands out: containerd-style mounts and how to give them back. */
  MountRef,
  /** A mount in the container: a Mountable at a destination, optionally read-only or a sub-path. */
  MountSpec,
  /** "default", "host", "none", "bridge", or a mode of your own network provider. */
  NetworkMode,
  /** A process and its streams, terminal resizes and signals. */
  ProcessInfo,
  /** What runs: args, env, cwd, user, terminal, limits, network, security, valid exit codes. */
  ProcessMeta,
  /** How the run a mount was lent to ended, passed to MountRef.release. */
  ReleaseOutcome,
  /** CPU time, peak memory and pids of a run's cgroup. */
  ResourceUsage,
  /** The container's root: a Mountable, optionally read-only. */
  RootSpec,
  /** A run: its process, root, mounts, id, labels and abort signal. */
  RunRequest,
  /** What a run ended with: its id, exit code and resource usage. */
  RunResult,
  /** A run's user namespace: "host" (none), "auto" (a free range of the pool), or explicit maps. */
  UsernsMode,
  /** A terminal size in rows and columns. */
  WinSize,
} from "./executor/types.js";
export {
  /** The chain IDs of a list of layer diff IDs, as containerd names unpacked snapshots. */
  chainIds,
  /** The snapshotter images are unpacked with unless told otherwise: overlayfs. */
  DEFAULT_SNAPSHOTTER,
  /** The parts of an image's config a run uses. */
  type ImageConfig,
  /** A resolved image: name, manifest, config, layers and their chain IDs. */
  type ResolvedImage,
  /** Applies an image's config to a ProcessMeta: env under the caller's, cwd and user unless given, entrypoint + cmd. */
  withImageDefaults,
} from "./image/image.js";
export {
  /** What loginRegistry takes besides the credentials. */
  type LoginOptions,
  /** Checks credentials against a registry and saves them in docker's config.json. */
  loginRegistry,
  /** Removes a registry's saved credentials from docker's config.json. */
  logoutRegistry,
} from "./image/login.js";
export {
  /** imageMountable's options: the snapshot's, and when and how to pull. */
  type ImageMountOptions,
  /** An image as a root or mount: pulled when `pull` says so, unpacked if needed, a fresh snapshot per run. */
  imageMountable,
  /** Snapshotter, and whether and under what name to commit the run's changes. */
  type SnapshotMountOptions,
  /** A committed snapshot, e.g. an earlier run's commit: a fresh snapshot on it per run. */
  snapshotMountable,
} from "./image/mountables.js";
export {
  /** What pullImage takes: platform, credentials, insecure registries, progress, signal. */
  type PullOptions,
  /** When to pull: "missing", "always" or "never". */
  type PullPolicy,
  /** One progress event of a pull: a blob's state, and bytes while downloading. */
  type PullProgress,
  /** Pulls an image from a registry into containerd: content, snapshots and the image record. */
  pullImage,
} from "./image/pull.js";
export {
  /** What resolveImage takes: the pull policy, and PullOptions for when it pulls. */
  type ResolveImageOptions,
  /** Looks an image up in containerd's store (for this host's platform), pulling it first when `pull` says so. */
  resolveImage,
} from "./image/resolve.js";
export {
  /** Makes sure each of an image's layers is unpacked as a committed snapshot; returns the top chain ID. */
  unpackImage,
} from "./image/unpack.js";
export {
  /** The host's network stack. */
  hostNetwork,
  /** A new network namespace with only loopback. */
  noneNetwork,
} from "./network/basic.js";
export {
  /** The built-in CNI bridge network's options (ExecutorOptions.bridge). */
  type BridgeOptions,
  /** A CNI bridge network provider with a pool of ready namespaces, e.g. a second bridge under another name. */
  BridgeProvider,
  /** The CNI config of the built-in bridge network, for a BridgeProvider of your own. */
  defaultBridgeConfig,
} from "./network/bridge.js";
export {
  /** A CNI plugin failed while setting up or tearing down a run's bridge network. */
  CniError,
} from "./network/cni.js";
export type {
  /** One run's network namespace, and how to give it back. */
  NetworkHandle,
  /** Makes a network namespace for each run. */
  NetworkProvider,
} from "./network/types.js";
export type {
  /** Host facts an executor detects (ExecutorOptions.hostFeatures overrides them in tests). */
  HostFeatures,
} from "./oci/host-features.js";
export type {
  /** An extra /etc/hosts line of a run. */
  HostIP,
} from "./oci/hosts.js";
export type {
  /** /etc/resolv.conf settings of an executor's runs. */
  DnsConfig,
} from "./oci/resolv-conf.js";
export type {
  /** Resource limits of a run (memory, CPU, cpuset, pids). */
  LinuxResources,
  /** Where a NetworkHandle's namespace comes from: the host's, a fresh one, or one at a path. */
  NetworkNamespace,
  /** "sandbox" (default: BuildKit's confinement) or "insecure" (privileged). */
  SecurityMode,
  /** One rlimit of a run, e.g. { name: "nofile", soft: 1024, hard: 2048 }. */
  Ulimit,
} from "./oci/spec.js";
export type {
  /** One line of a uid or gid map: `size` ids from `containerId` in the container are `hostId`.. on the host. */
  IdMapEntry,
  /** A user namespace's uid and gid maps. */
  IdMapping,
} from "./oci/userns.js";
export {
  /** The normalized parts of an image reference (docker's rules: alpine → docker.io/library/alpine:latest). */
  type ImageReference,
  /** Parses an image reference as docker does. */
  parseReference,
} from "./registry/reference.js";
export type {
  /** A registry user name and password (or token). */
  RegistryCredentials,
} from "./registry/types.js";
export {
  /** Where the default rootfs lives under a state dir. */
  defaultRootfsPath,
  /** Builds the default rootfs if needed and returns its path. */
  ensureDefaultRootfs,
} from "./rootfs/default-rootfs.js";
export {
  /** nsenter's arguments that put a command in a rootless daemon's namespaces (user, mount, pid; network with slirp4netns). */
  enterArgs,
  /** The user's rootless containerd started by `ctrexec rootless start`, if it runs; says whether this process is inside it. */
  findRootless,
  /** Whether this process runs in a user namespace other than the host's. */
  inUserNamespace,
  /** A rootless daemon found: its layout, its record, and whether this process is inside its namespaces. */
  type RootlessDaemon,
  /** Where a user's rootless containerd and ctrexec keep their files (nerdctl's directories). */
  type RootlessLayout,
  /** Options of rootlessStatus and stopRootless: a logger, the user's environment. */
  type RootlessOptions,
  /** What `ctrexec rootless start` records about the daemon it started. */
  type RootlessRecord,
  /** A rootless daemon's state: running, stopped or stale (recorded but gone), pid, socket, network, answers. */
  type RootlessStatus,
  /** The rootless layout for an environment (XDG_RUNTIME_DIR, XDG_DATA_HOME, HOME). */
  rootlessLayout,
  /** The user's rootless daemon's state (`ctrexec rootless status`). */
  rootlessStatus,
  /** Options of startRootless: also the network (auto, host, slirp4netns) and how long containerd may take. */
  type StartRootlessOptions,
  /** Starts the user's rootless containerd under rootlesskit, detached, once (`ctrexec rootless start`). */
  startRootless,
  /** Stops the user's rootless containerd and everything in it (`ctrexec rootless stop`). */
  stopRootless,
} from "./rootless/index.js";
export {
  /** Structured fields of a log line. */
  type LogFields,
  /** The logger interface an executor takes: debug, info, warn, error. */
  type Logger,
  /** "debug", "info", "warn", "error" or "silent". */
  type LogLevel,
  /** A logger that drops everything (the default). */
  silentLogger,
  /** A logger that writes one line per record to stderr, at or above a level. */
  stderrLogger,
} from "./util/logger.js";
