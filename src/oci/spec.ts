import { posix } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import { DEFAULT_PATH, defaultSpec } from "./defaults.js";
import type { HostFeatures } from "./host-features.js";
import { DEFAULT_HOSTNAME } from "./hosts.js";
import { defaultSeccompProfile } from "./seccomp.js";
import type { Device, Mount, Resources, Rlimit, Spec } from "./types.js";
import { assertUserMapped, type IdMapping, mapToHost, toOciMappings, validateIdMapping } from "./userns.js";
import { validateArgs, validateCgroupParent, validateConsoleSize, validateContainerHostname, validateCwd, validateMounts } from "./validate.js";

export type SecurityMode = "sandbox" | "insecure";

export interface Ulimit {
  /** e.g. "nofile" (RLIMIT_NOFILE). */
  name: string;
  /** -1 means unlimited. */
  soft: number;
  hard: number;
}

export interface LinuxResources {
  /** Bytes. */
  memory?: number;
  /** Memory plus swap, bytes; -1 unlimited. */
  memorySwap?: number;
  cpuShares?: number;
  cpuQuota?: number;
  cpuPeriod?: number;
  cpusetCpus?: string;
  cpusetMems?: string;
  pidsLimit?: number;
}

/** Where the process's network namespace comes from: the host's, a fresh one, or one at a path. */
export type NetworkNamespace = { kind: "host" } | { kind: "new" } | { kind: "path"; path: string };

export interface SpecInput {
  id: string;
  /** containerd namespace: the default cgroups path is /<namespace>/<id>. */
  namespace: string;
  args: string[];
  env?: readonly string[] | undefined;
  cwd?: string | undefined;
  user: { uid: number; gid: number; additionalGids: readonly number[] };
  hostname?: string | undefined;
  terminal?: boolean | undefined;
  consoleSize?: { rows: number; cols: number } | undefined;
  readonlyRootfs?: boolean | undefined;
  ulimits?: readonly Ulimit[] | undefined;
  cgroupParent?: string | undefined;
  resources?: LinuxResources | undefined;
  security?: SecurityMode | undefined;
  apparmorProfile?: string | undefined;
  /** SELinux process and mount labels; asking for them on a host without SELinux is an error. */
  selinux?: { processLabel?: string; mountLabel?: string } | undefined;
  network?: NetworkNamespace | undefined;
  /** Host paths bind-mounted read-only at /etc/resolv.conf and /etc/hosts. */
  resolvConfPath?: string | undefined;
  hostsPath?: string | undefined;
  /** Extra mounts in order; a later mount on the same destination replaces an earlier one in place. */
  mounts?: readonly Mount[] | undefined;
  /** Host path of an OTLP gRPC socket to offer at /dev/otel-grpc.sock (pass only when it exists). */
  traceSocket?: string | undefined;
  rootless?: boolean | undefined;
  /**
   * A user namespace for the run with these maps (checked by validateIdMapping); the process's user and groups
   * must be mapped. Unset: the host's user namespace. Not with `rootless` (that has one already).
   */
  userns?: IdMapping | undefined;
  annotations?: Record<string, string> | undefined;
  /**
   * Absolute host path of the root, for runc to mount inside the container's own mount namespace. Unset, the
   * root is the bundle's `rootfs` directory that the shim mounts.
   */
  rootPath?: string | undefined;
}

export type SpecOpt = (spec: Spec) => void;

export const ULIMIT_NAMES: readonly string[] = [
  "as",
  "core",
  "cpu",
  "data",
  "fsize",
  "locks",
  "memlock",
  "msgqueue",
  "nice",
  "nofile",
  "nproc",
  "rss",
  "rtprio",
  "rttime",
  "sigpending",
  "stack",
];

/** RLIMIT_INFINITY as the uint64 runc expects; serializeSpec writes it exactly. */
export const RLIM_INFINITY = 2n ** 64n - 1n;

const proc = (s: Spec) => s.process!;
const linux = (s: Spec) => (s.linux ??= {});

export const withUser =
  (uid: number, gid: number, additionalGids: readonly number[]): SpecOpt =>
  (s) => {
    // The primary gid goes first in additionalGids, for run and exec alike (BuildKit: run only, §12.10).
    proc(s).user = { uid, gid, additionalGids: [gid, ...additionalGids.filter((g) => g !== gid)] };
  };

export const withRootfsReadonly: SpecOpt = (s) => {
  s.root = { path: s.root?.path ?? "rootfs", readonly: true };
};

/** cgroups path: systemd's `slice:prefix:` form gets the id appended, a plain parent gets /<parent>/ctrexec/<id>. */
export const withCgroupParent =
  (parent: string, id: string): SpecOpt =>
  (s) => {
    linux(s).cgroupsPath = parent.includes(".slice") && parent.endsWith(":") ? parent + id : posix.join("/", parent, "ctrexec", id);
  };

export const withoutMount =
  (destination: string): SpecOpt =>
  (s) => {
    s.mounts = (s.mounts ?? []).filter((m) => m.destination !== destination);
  };

export const withMounts =
  (mounts: readonly Mount[]): SpecOpt =>
  (s) => {
    s.mounts = [...(s.mounts ?? []), ...mounts];
  };

/** A later mount on an already used destination replaces the earlier one where it stood (§5.7). */
export const withDedupedMounts: SpecOpt = (s) => {
  const out: Mount[] = [];
  const at = new Map<string, number>();
  for (const m of s.mounts ?? []) {
    const i = at.get(m.destination);
    if (i === undefined) {
      at.set(m.destination, out.length);
      out.push(m);
    } else out[i] = m;
  }
  s.mounts = out;
};

export const withSandbox =
  (host: HostFeatures, apparmorProfile: string | undefined): SpecOpt =>
  (s) => {
    if (host.seccomp) {
      linux(s).seccomp = defaultSeccompProfile(proc(s).capabilities?.bounding ?? [], host.arch, host.kernelRelease);
    }
    if (apparmorProfile) {
      if (!host.apparmor) {
        throw new InvalidArgumentError(`AppArmor is not supported on this host, but the profile '${apparmorProfile}' was specified`, {
          field: "apparmorProfile",
        });
      }
      proc(s).apparmorProfile = apparmorProfile;
    }
  };

function insecureDevices(host: HostFeatures): Device[] {
  const c = (path: string, major: number, minor: number): Device => ({ type: "c", path, major, minor, fileMode: 0o666, uid: 0, gid: 0 });
  const devices = [
    c("/dev/kmsg", 1, 11),
    c("/dev/cuse", 10, 203),
    c("/dev/fuse", 10, 229),
    c("/dev/kvm", 10, 232),
    c("/dev/net/tun", 10, 200),
    c("/dev/loop-control", 10, 237),
  ];
  for (let i = 0; i < host.loopDevices + 8; i++) {
    devices.push({ type: "b", path: `/dev/loop${i}`, major: 7, minor: i, fileMode: 0o660, uid: 0, gid: 0 });
  }
  return devices;
}

/**
 * docker's --privileged: all of this process's capabilities, no masks, no seccomp, all devices, writable
 * cgroup/sysfs. No device nodes in a user namespace (BuildKit §9.2): runc bind-mounts them from the host there,
 * and one the host lacks (/dev/kvm) would fail the start.
 */
export const withInsecure =
  (host: HostFeatures, userns = false): SpecOpt =>
  (s) => {
    const caps = [...host.capabilities];
    proc(s).capabilities = { bounding: caps, effective: [...caps], inheritable: [...caps], permitted: [...caps], ambient: [...caps] };
    const l = linux(s);
    l.maskedPaths = [];
    l.readonlyPaths = [];
    delete l.seccomp;
    delete proc(s).apparmorProfile;
    l.resources = {
      ...l.resources,
      devices: [
        { allow: false, access: "rwm" },
        { allow: true, type: "c", access: "rwm" },
        { allow: true, type: "b", access: "rwm" },
      ],
    };
    if (!host.inUserNamespace && !userns) l.devices = [...(l.devices ?? []), ...insecureDevices(host)];
    for (const m of s.mounts ?? []) {
      if ((m.type === "cgroup" || m.type === "sysfs") && m.options) {
        m.options = m.options.map((o) => (o === "ro" ? "rw" : o));
      }
    }
  };

export function validateUlimits(ulimits: readonly Ulimit[]): void {
  for (const u of ulimits) {
    if (!ULIMIT_NAMES.includes(u.name)) {
      throw new InvalidArgumentError(`unknown ulimit name ${JSON.stringify(u.name)}; known: ${ULIMIT_NAMES.join(", ")}`, {
        field: "ulimits",
      });
    }
    for (const v of [u.soft, u.hard]) {
      if (!Number.isSafeInteger(v) || v < -1) {
        throw new InvalidArgumentError(`ulimit ${u.name}: ${v} is not a limit (a whole number, or -1 for unlimited)`, {
          field: "ulimits",
        });
      }
    }
    if (u.hard !== -1 && (u.soft === -1 || u.soft > u.hard)) {
      throw new InvalidArgumentError(`ulimit ${u.name}: soft limit ${u.soft} is above the hard limit ${u.hard}`, {
        field: "ulimits",
      });
    }
  }
}

/** Replaces the rlimits with the given ones; with none, the process inherits the runtime's (BuildKit's choice). */
export const withUlimits =
  (ulimits: readonly Ulimit[] | undefined): SpecOpt =>
  (s) => {
    if (!ulimits || ulimits.length === 0) {
      delete proc(s).rlimits;
      return;
    }
    validateUlimits(ulimits);
    const value = (n: number) => (n === -1 ? RLIM_INFINITY : n);
    proc(s).rlimits = ulimits.map((u): Rlimit => ({ type: `RLIMIT_${u.name.toUpperCase()}`, soft: value(u.soft), hard: value(u.hard) }));
  };

function checkPositive(field: string, v: number | undefined, allowMinusOne = false): void {
  if (v === undefined) return;
  if (!Number.isSafeInteger(v) || (v < 0 && !(allowMinusOne && v === -1))) {
    throw new InvalidArgumentError(`resources.${field}: ${v} is not a valid value`, { field: `resources.${field}` });
  }
}

const CPUSET_RE = /^\d+(-\d+)?(,\d+(-\d+)?)*$/;

export const withResources =
  (r: LinuxResources | undefined): SpecOpt =>
  (s) => {
    if (!r) return;
    checkPositive("memory", r.memory);
    checkPositive("memorySwap", r.memorySwap, true);
    checkPositive("cpuShares", r.cpuShares);
    checkPositive("cpuQuota", r.cpuQuota);
    checkPositive("cpuPeriod", r.cpuPeriod);
    checkPositive("pidsLimit", r.pidsLimit);
    for (const [field, v] of [
      ["cpusetCpus", r.cpusetCpus],
      ["cpusetMems", r.cpusetMems],
    ] as const) {
      if (v !== undefined && v !== "" && !CPUSET_RE.test(v)) {
        throw new InvalidArgumentError(`resources.${field}: ${JSON.stringify(v)} is not a CPU/node list like 0-2,4`, {
          field: `resources.${field}`,
        });
      }
    }
    const l = linux(s);
    l.resources ??= {};
    const res: Resources = l.resources;
    const memory = () => {
      res.memory ??= {};
      return res.memory;
    };
    const cpu = () => {
      res.cpu ??= {};
      return res.cpu;
    };
    if (r.memory) memory().limit = r.memory;
    if (r.memorySwap) memory().swap = r.memorySwap;
    if (r.cpuShares) cpu().shares = r.cpuShares;
    if (r.cpuQuota) cpu().quota = r.cpuQuota;
    if (r.cpuPeriod) cpu().period = r.cpuPeriod;
    if (r.cpusetCpus) cpu().cpus = r.cpusetCpus;
    if (r.cpusetMems) cpu().mems = r.cpusetMems;
    if (r.pidsLimit) res.pids = { limit: r.pidsLimit };
  };

/**
 * The process env: the caller's `KEY=VALUE` entries in order, a later entry replacing an earlier one of the
 * same key, and a bare `KEY` removing it. PATH defaults to the usual list when absent (as docker and BuildKit's
 * ExecOp do; the Go executor itself appended duplicates and had no PATH, reference §5.9).
 */
export function mergeEnv(base: readonly string[], overrides: readonly string[]): string[] {
  const env = new Map<string, string>();
  for (const e of [...base, ...overrides]) {
    const i = e.indexOf("=");
    if (i < 0) env.delete(e);
    else if (i > 0) {
      const key = e.slice(0, i);
      env.delete(key); // re-insert so the order follows the last definition
      env.set(key, e);
    }
  }
  return [...env.values()];
}

export const withEnv =
  (env: readonly string[] | undefined): SpecOpt =>
  (s) => {
    const merged = mergeEnv([], env ?? []);
    if (!merged.some((e) => e.startsWith("PATH="))) merged.unshift(`PATH=${DEFAULT_PATH}`);
    proc(s).env = merged;
  };

export const withTraceSocket =
  (hostPath: string): SpecOpt =>
  (s) => {
    proc(s).env = mergeEnv(
      ["OTEL_TRACES_EXPORTER=otlp", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=unix:///dev/otel-grpc.sock", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc"],
      proc(s).env ?? [],
    );
    s.mounts = [...(s.mounts ?? []), { destination: "/dev/otel-grpc.sock", type: "bind", source: hostPath, options: ["ro", "rbind"] }];
  };

export const withNetwork =
  (ns: NetworkNamespace): SpecOpt =>
  (s) => {
    const l = linux(s);
    const others = (l.namespaces ?? []).filter((n) => n.type !== "network");
    if (ns.kind === "host") l.namespaces = others;
    else if (ns.kind === "new") l.namespaces = [...others, { type: "network" }];
    else l.namespaces = [...others, { type: "network", path: ns.path }];
  };

/** Is `p` the directory `dir` or inside it, by path components (not a string prefix: /sysroot is not /sys). */
export function isUnder(p: string, dir: string): boolean {
  const a = posix.normalize(p);
  return a === dir || a.startsWith(`${dir}/`);
}

/** BuildKit's rootless conversion, matching /sys by path component (§9.1, §12.19). */
export const withRootless: SpecOpt = (s) => {
  s.mounts = (s.mounts ?? []).filter((m) => !isUnder(m.destination, "/sys"));
  const l = linux(s);
  delete l.resources;
  l.cgroupsPath = "";
};

/**
 * /sys for a container whose network namespace its user namespace does not own: a read-only rbind of the
 * host's, as BuildKit and nerdctl do. A fresh sysfs shows its network namespace's devices, so mounting one
 * needs CAP_SYS_ADMIN over the user namespace that owns that network namespace: the host's for the host
 * network and for a namespace the host made (CNI), where runc fails with `mount sysfs ... operation not
 * permitted` (probe caveat 4). The host's sysfs files stay owned by host ids outside the run's range, which
 * the container's root cannot write through (its capabilities stop at its own user namespace).
 */
export function hostSysfsBind(): Mount {
  // rro: the host's mounts below /sys (cgroup v1 hierarchies, debugfs, bpf...) read-only too, not only the top
  // (runc ≥ 1.1 with mount_setattr, Linux ≥ 5.12).
  return { destination: "/sys", type: "bind", source: "/sys", options: ["rbind", "nosuid", "noexec", "nodev", "ro", "rro"] };
}

/**
 * A user namespace with the given maps (already validated): the namespace, the maps, /sys as hostSysfsBind
 * unless runc creates the network namespace, and no `gid=5` on /dev/pts when the maps leave container gid 5
 * out (devpts takes the gid in the mounter's user namespace and refuses an unmapped one; podman drops it too).
 * In insecure mode /sys starts read-only all the same; there the container's root may remount it writable (runc
 * made it read-only inside its namespace), and host root's files in it stay out of its reach by their owners.
 */
export const withUserNamespace =
  (m: IdMapping, network: NetworkNamespace): SpecOpt =>
  (s) => {
    const l = linux(s);
    l.namespaces = [...(l.namespaces ?? []).filter((n) => n.type !== "user"), { type: "user" }];
    const { uidMappings, gidMappings } = toOciMappings(m);
    l.uidMappings = uidMappings;
    l.gidMappings = gidMappings;
    const gid5 = mapToHost(m.gidMap, 5) !== undefined;
    s.mounts = (s.mounts ?? []).map((mount) => {
      if (network.kind !== "new" && mount.destination === "/sys" && mount.type === "sysfs") return hostSysfsBind();
      if (!gid5 && mount.type === "devpts" && mount.options?.includes("gid=5"))
        return { ...mount, options: mount.options.filter((o) => o !== "gid=5") };
      return mount;
    });
  };

/**
 * The OCI spec of a run, as BuildKit's GenerateSpec builds it (reference §5), from containerd's defaults and a
 * list of small options applied in order. Throws InvalidArgumentError, naming the field, on bad input.
 * With `userns`, the caller also applies withLockedFlags (mounts.ts) to the mounts: their sources' flags are
 * host facts this pure function does not read.
 */
export function generateSpec(input: SpecInput, host: HostFeatures): Spec {
  const env = input.env ?? [];
  validateArgs(input.args, env);
  const security = input.security ?? "sandbox";
  if (security !== "sandbox" && security !== "insecure") {
    throw new InvalidArgumentError(`invalid security mode ${JSON.stringify(security)}: use "sandbox" or "insecure"`, {
      field: "security",
    });
  }
  if (input.selinux && !host.selinux) throw new InvalidArgumentError("selinux is not available", { field: "selinux" });
  const hostname = input.hostname || DEFAULT_HOSTNAME;
  validateContainerHostname(hostname);
  validateConsoleSize(input.consoleSize);
  validateCgroupParent(input.cgroupParent);
  const cwd = input.cwd || "/";
  validateCwd(cwd);
  validateMounts(input.mounts ?? []);
  let userns: IdMapping | undefined;
  if (input.userns !== undefined) {
    if (input.rootless) {
      throw new InvalidArgumentError("a user namespace per run needs a root containerd; rootless already runs every container in one", {
        field: "userns",
      });
    }
    userns = validateIdMapping(input.userns, "userns");
    assertUserMapped(userns, input.user, "user");
  }

  const spec = defaultSpec(input.namespace, input.id);
  const opts: SpecOpt[] = [withUser(input.user.uid, input.user.gid, input.user.additionalGids)];
  if (input.readonlyRootfs) opts.push(withRootfsReadonly);
  if (input.cgroupParent) opts.push(withCgroupParent(input.cgroupParent, input.id));
  // BuildKit: no /run tmpfs, so writes to /run persist in the rootfs like any directory (#429).
  opts.push(withoutMount("/run"));
  const generated: Mount[] = [];
  const envFileOptions = ["nosuid", "noexec", "nodev", "rbind", "ro"];
  if (input.resolvConfPath) generated.push({ destination: "/etc/resolv.conf", type: "bind", source: input.resolvConfPath, options: envFileOptions });
  if (input.hostsPath) generated.push({ destination: "/etc/hosts", type: "bind", source: input.hostsPath, options: envFileOptions });
  generated.push({ destination: "/sys/fs/cgroup", type: "cgroup", source: "cgroup", options: ["ro", "nosuid", "noexec", "nodev"] });
  opts.push(withMounts(generated));
  opts.push(security === "insecure" ? withInsecure(host, userns !== undefined) : withSandbox(host, input.apparmorProfile));
  opts.push(withUlimits(input.ulimits), withResources(input.resources), withEnv(env));
  opts.push((s) => {
    const p = proc(s);
    p.args = [...input.args];
    p.cwd = cwd;
    p.noNewPrivileges = false; // setuid binaries (sudo, ping) work in steps, as in BuildKit
    p.terminal = input.terminal ?? false;
    if (input.terminal && input.consoleSize) p.consoleSize = { height: input.consoleSize.rows, width: input.consoleSize.cols };
    s.hostname = hostname;
    if (input.selinux?.processLabel) p.selinuxLabel = input.selinux.processLabel;
    if (input.selinux?.mountLabel) linux(s).mountLabel = input.selinux.mountLabel;
    if (input.annotations) s.annotations = { ...input.annotations };
    if (input.rootPath) s.root = { ...s.root, path: input.rootPath };
  });
  if (host.cgroupNamespaces) opts.push((s) => linux(s).namespaces!.push({ type: "cgroup" }));
  const network = input.network ?? { kind: "new" };
  opts.push(withNetwork(network));
  opts.push(withMounts(input.mounts ?? []));
  if (input.traceSocket) opts.push(withTraceSocket(input.traceSocket));
  opts.push(withDedupedMounts);
  // After the dedup: a mount of the caller's on /sys has replaced the sysfs and stays as given.
  if (userns) opts.push(withUserNamespace(userns, network));
  if (input.rootless) opts.push(withRootless);

  for (const o of opts) o(spec);
  return spec;
}

export {
  HOSTNAME_MAX_BYTES,
  validateCgroupParent,
  validateConsoleSize,
  validateContainerHostname,
  validateMountStrings,
} from "./validate.js";
