import type { Readable, Writable } from "node:stream";
import type { Mount as ContainerdMount } from "../containerd/types.js";
import type { HostIP } from "../oci/hosts.js";
import type { LinuxResources, SecurityMode, Ulimit } from "../oci/spec.js";

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
