/**
 * `ctrexec/oci`: OCI runtime spec generation as the executor does it (BuildKit's GenerateSpec), pure of
 * containerd. Lower-level and less stable than the main entry `ctrexec`: names and shapes here may change
 * between minor versions.
 */

export {
  /** containerd's default Linux spec (`ctr oci spec`) for a container; a fresh object each call. */
  defaultSpec,
} from "./defaults.js";
export {
  /** The host facts a spec depends on (cgroup namespaces, seccomp, AppArmor, SELinux, capabilities…), detected once. */
  detectHostFeatures,
  /** What detectHostFeatures returns and generateSpec takes. */
  type HostFeatures,
} from "./host-features.js";
export type {
  /** One extra /etc/hosts line: a host name and its address. */
  HostIP,
} from "./hosts.js";
export type {
  /** /etc/resolv.conf settings of a run. */
  DnsConfig,
} from "./resolv-conf.js";
export {
  /** A run's OCI spec from its input and the host's features; bad input throws InvalidArgumentError naming the field. */
  generateSpec,
  /** Resource limits of a run (memory, CPU, cpuset, pids). */
  type LinuxResources,
  /** Where a process's network namespace comes from: the host's, a fresh one, or one at a path. */
  type NetworkNamespace,
  /** "sandbox" (BuildKit's confinement) or "insecure" (privileged). */
  type SecurityMode,
  /** What generateSpec takes: the process, its user, limits, security, network, mounts. */
  type SpecInput,
  /** The rlimit names a Ulimit may use ("nofile", "nproc", …). */
  ULIMIT_NAMES,
  /** One rlimit of a run. */
  type Ulimit,
} from "./spec.js";
/** The OCI runtime spec types (Spec, Process, Mount, Linux, Seccomp…). */
export type * from "./types.js";
/** A user namespace's maps (SpecInput.userns). */
export type { IdMapEntry, IdMapping } from "./userns.js";
export {
  /** podman's `--uidmap`/`--gidmap` CONTAINER:HOST:SIZE as one map entry; bad input names `field`. */
  parseIdMapFlag,
} from "./userns.js";
