import type { Readable, Writable } from "node:stream";
import type { Mount as ContainerdMount } from "../containerd/types.js";
import type { HostIP } from "../oci/hosts.js";
import type { LinuxResources, SecurityMode, Ulimit } from "../oci/spec.js";
import type { IdMapping } from "../oci/userns.js";

/**
 * The run's user namespace. `"host"`: none, the container's root is the host's root (kept in by capabilities,
 * seccomp and masked paths). `"auto"`: a user namespace whose 65536 ids are a range of the executor's pool that
 * no other live run holds. A mapping: exactly these maps (the caller keeps ranges apart).
 */
export type UsernsMode = "host" | "auto" | IdMapping;

/** How the run a mount was lent to ended, for its release. */
export interface ReleaseOutcome {
  /** The run succeeded (a valid exit code, its task and container deleted): only then is its result kept. */
  succeeded: boolean;
}

/** What a Mountable hands out: containerd-style mounts (no destination) and how to give them back. */
export interface MountRef {
  mounts: ContainerdMount[];
  /** The executor passes the run's outcome; a caller that releases a ref itself may omit it (a success). */
  release(outcome?: ReleaseOutcome): Promise<void>;
  /**
   * release() keeps the run's result (a commit): its failure fails the run. Any other release failure is only
   * logged, as in BuildKit, where only a failed deletion of the task or container fails a successful run.
   */
  keepsResult?: boolean;
  /**
   * The mounts are this run's alone (a fresh snapshot). In a user namespace the container then writes into them
   * through an idmapped mount, storing the ids a run without one would see (a commit stays ordinary); anything
   * else shared is written to through a copy-on-write layer of the run's own.
   */
  exclusive?: boolean;
}

/** Something that can be mounted: a host directory, a tmpfs, a snapshot, an image. */
export interface Mountable {
  mount(readonly: boolean): Promise<MountRef>;
}

export interface MountSpec {
  source: Mountable;
  /** Absolute path in the container ("/" for the root). */
  dest: string;
  readonly?: boolean;
  /** A path inside the source to mount instead of all of it. */
  selector?: string;
  /**
   * In a user namespace, mount a host directory idmapped: its files show with their host owners, and the
   * container's root acts as the host's root on it (can modify root-owned files). Default false: mounted as it
   * is, files of ids outside the run's range show as `nobody` and stay out of its reach.
   */
  idmap?: boolean;
}

export interface RootSpec {
  source: Mountable;
  /** Honoured (BuildKit's containerd executor ignored it, reference §12.11): the root is read-only. */
  readonly?: boolean;
}

export type NetworkMode = "default" | "host" | "none" | "bridge" | (string & {});

export interface ProcessMeta {
  args: string[];
  /** `KEY=VALUE`; a later key wins; a bare `KEY` unsets. PATH defaults when absent. */
  env?: string[];
  /** Absolute; created (0755, owned by the user) for runs; default "/". */
  cwd?: string;
  /** `user`, `uid`, `user:group`, `uid:gid`; resolved in the rootfs. Default root. */
  user?: string;
  hostname?: string;
  tty?: boolean;
  /** Initial terminal size (BuildKit had none until the first resize, reference §12.22). */
  consoleSize?: WinSize;
  readonlyRootfs?: boolean;
  extraHosts?: HostIP[];
  ulimits?: Ulimit[];
  cgroupParent?: string;
  resources?: LinuxResources;
  network?: NetworkMode;
  security?: SecurityMode;
  /** Exit codes that count as success. Absent or empty: only 0 (BuildKit made empty mean "none", §12.3). */
  validExitCodes?: number[];
  /** The run's user namespace; default the executor's `userns.default`, itself default "host". */
  userns?: UsernsMode;
  /** Also remove mount-point parents the runtime created (BuildKit's LLB always sets this). Default true. */
  removeMountStubsRecursive?: boolean;
}

export interface WinSize {
  rows: number;
  cols: number;
}

export interface ProcessInfo {
  meta: ProcessMeta;
  stdin?: Readable | null;
  stdout?: Writable | null;
  stderr?: Writable | null;
  /** Terminal size changes, applied as they come (TTY only). */
  resize?: AsyncIterable<WinSize>;
  /** Signals for the process, by name ("SIGTERM") or number. */
  signals?: AsyncIterable<NodeJS.Signals | number>;
}

export interface RunRequest {
  /** Letters, digits and `._-` (containerd's identifier rules); generated when absent. */
  id?: string;
  /** The root filesystem; the built-in default rootfs (busybox, in the state dir) when absent. */
  root?: RootSpec;
  mounts?: MountSpec[];
  process: ProcessInfo;
  /** Your labels on the container; keys starting with "ctrexec." are reserved. */
  labels?: Record<string, string>;
  signal?: AbortSignal;
  /** Called once, when the process has started; never on a failure path. */
  onStarted?: (info: { id: string; pid: number }) => void;
}

export interface ResourceUsage {
  /** CPU time of the container's cgroup, nanoseconds. */
  cpuNanos?: number;
  /** Peak memory of the container's cgroup, bytes. */
  memoryPeakBytes?: number;
  /** Peak (cgroup v2) or current number of pids, where the kernel reports it. */
  pids?: number;
}

export interface RunResult {
  id: string;
  exitCode: number;
  usage: ResourceUsage;
}

export interface ExecOptions {
  signal?: AbortSignal;
  /** Called once, when the exec'd process has started. */
  onStarted?: (info: { id: string; execId: string; pid: number }) => void;
}
