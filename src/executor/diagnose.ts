import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { promisify } from "node:util";
import type { ContainerdClient } from "../containerd/client.js";
import { fifoImplementation } from "../containerd/fifo.js";
import { DEFAULT_RUNTIME } from "../containerd/task-cleanup.js";
import { DEFAULT_SNAPSHOTTER } from "../image/image.js";
import { autoNetworkMode } from "../network/auto.js";
import { DEFAULT_PLUGIN_DIRS } from "../network/cni.js";
import { detectHostFeatures } from "../oci/host-features.js";
import { defaultRootfsPath } from "../rootfs/default-rootfs.js";
import { findRootless } from "../rootless/layout.js";
import { isHostRoot } from "../util/user-namespace.js";
import { diagnoseUserns, type UsernsDiagnosis } from "./diagnose-userns.js";
import { DEFAULT_FIFO_ROOT, DEFAULT_STATE_DIR } from "./options.js";
import { chooseShimLauncher } from "./shims/launcher.js";

/** What diagnoseHost looks at; each default is the executor's. */
export interface DiagnoseOptions {
  /** The containerd to ask (its address and namespace are reported). */
  client: ContainerdClient;
  /** Default /var/lib/ctrexec. */
  stateDir?: string;
  /** Default /run/ctrexec/fifo. */
  fifoRoot?: string;
  /** Default io.containerd.runc.v2. */
  runtime?: string;
  /** As ExecutorOptions.shimLauncher: a path, false for none, absent for the executor's choice. */
  shimLauncher?: string | false;
  /** Whether runs would be rootless; default: as the executor decides (an unprivileged process, or one in a user namespace). */
  rootless?: boolean;
}

/** One thing rootless mode does or does not do on this host, and why not. */
export interface RootlessCapability {
  what: string;
  works: boolean;
  why?: string;
}

/** Rootless mode: the user's daemon (`ctrexec rootless start`) if one runs, and what works in that mode here. */
export interface RootlessDiagnosis {
  daemon: { rootlesskitPid: number; network: "host" | "slirp4netns"; address: string; startedAt: string; inside: boolean } | null;
  capabilities: RootlessCapability[];
}

/** The setup an executor would run on, as `ctrexec info` shows it. */
export interface HostDiagnosis {
  containerd:
    | { reachable: true; address: string; version: string; revision: string; snapshotters: string[] }
    | { reachable: false; address: string; error: string };
  namespace: string;
  /** The runtime, runc's version ("not found" without runc), and the shim launcher tasks would go through (null: none). */
  runtime: { name: string; runc: string; shimLauncher: string | null };
  cgroup: { version: 1 | 2; namespaces: boolean };
  /** `userNamespace`: ctrexec itself runs in a user namespace (not the host's initial one). */
  security: { seccomp: boolean; apparmor: boolean; selinux: boolean; userNamespace: boolean };
  /**
   * What a run with `userns` needs: the kernel's user namespaces, and idmapped mounts on the filesystems of the
   * state dir (runs' own dirs), the default rootfs and the default snapshotter's root (image and snapshot roots).
   */
  userns: UsernsDiagnosis;
  /** Set when runs would be rootless (null: a root containerd). */
  rootless: RootlessDiagnosis | null;
  /** The mode `network: "default"` picks, the built-in providers, and the CNI plugins the bridge needs. */
  network: { default: "bridge" | "host"; providers: string[]; cniPluginDir: string | null; cniPlugins: string[] };
  defaultRootfs: { path: string; built: boolean };
  stateDir: string;
  fifoRoot: string;
  /** How FIFOs are made: the native addon, or spawning mkfifo(1) where it could not be built. */
  fifo: "native" | "spawn";
  kernel: string;
  arch: string;
}

/** The CNI plugins the built-in bridge network uses. */
const BRIDGE_PLUGINS = ["bridge", "host-local", "loopback", "firewall", "portmap"];
const RUNC_VERSION_TIMEOUT_MS = 5000;

async function runcVersion(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)("runc", ["--version"], { timeout: RUNC_VERSION_TIMEOUT_MS });
    return stdout.split("\n")[0]?.replace(/^runc version /, "") ?? "";
  } catch {
    return "not found";
  }
}

/** containerd's facts, and the directory each snapshotter keeps its snapshots in (as its plugin exports it). */
async function containerdFacts(client: ContainerdClient): Promise<{ facts: HostDiagnosis["containerd"]; snapshotterRoots: Map<string, string> }> {
  const snapshotterRoots = new Map<string, string>();
  try {
    const v = await client.version();
    const plugins = await client.introspection.plugins([`type=="io.containerd.snapshotter.v1"`]).catch(() => []);
    for (const p of plugins) if (p.exports["root"]) snapshotterRoots.set(p.id, p.exports["root"]);
    const facts = {
      reachable: true as const,
      address: client.address,
      version: v.version,
      revision: v.revision,
      snapshotters: plugins.map((p) => p.id),
    };
    return { facts, snapshotterRoots };
  } catch (err) {
    return { facts: { reachable: false, address: client.address, error: err instanceof Error ? err.message : String(err) }, snapshotterRoots };
  }
}

/**
 * What ctrexec runs on: containerd (reachable, version, snapshotters), runtime and shim launcher, cgroups,
 * security features, networking, the default rootfs and the state directories. Never throws for an
 * unreachable containerd: that is part of the diagnosis.
 */
export async function diagnoseHost(options: DiagnoseOptions): Promise<HostDiagnosis> {
  const { client } = options;
  const stateDir = options.stateDir ?? DEFAULT_STATE_DIR;
  const runtime = options.runtime ?? DEFAULT_RUNTIME;
  const [{ facts: containerd, snapshotterRoots }, runc, defaultNetwork] = await Promise.all([
    containerdFacts(client),
    runcVersion(),
    autoNetworkMode(),
  ]);
  const host = detectHostFeatures();
  const cniDir = DEFAULT_PLUGIN_DIRS.find((d) => existsSync(d));
  const cniPlugins = cniDir ? readdirSync(cniDir).filter((f) => BRIDGE_PLUGINS.includes(f)) : [];
  const rootfs = defaultRootfsPath(stateDir);
  const containerdVersion = containerd.reachable ? containerd.version : "";
  const snapshotterRoot = snapshotterRoots.get(DEFAULT_SNAPSHOTTER);
  const rootless = options.rootless ?? !isHostRoot();
  const cgroupVersion = existsSync("/sys/fs/cgroup/cgroup.controllers") ? 2 : 1;
  const userns = await diagnoseUserns([
    { what: "state dir", path: stateDir },
    { what: "default rootfs", path: rootfs },
    ...(snapshotterRoot ? [{ what: `snapshotter ${DEFAULT_SNAPSHOTTER}`, path: snapshotterRoot }] : []),
  ]);
  return {
    containerd,
    namespace: client.namespace,
    runtime: { name: runtime, runc, shimLauncher: chooseShimLauncher(options.shimLauncher, runtime, containerdVersion) ?? null },
    cgroup: { version: cgroupVersion, namespaces: host.cgroupNamespaces },
    security: { seccomp: host.seccomp, apparmor: host.apparmor, selinux: host.selinux, userNamespace: host.inUserNamespace },
    userns,
    rootless: rootless ? diagnoseRootless(cgroupVersion) : null,
    network: { default: rootless ? "host" : defaultNetwork, providers: ["host", "none", "bridge"], cniPluginDir: cniDir ?? null, cniPlugins },
    defaultRootfs: { path: rootfs, built: existsSync(`${rootfs}/bin/busybox`) },
    stateDir,
    fifoRoot: options.fifoRoot ?? DEFAULT_FIFO_ROOT,
    fifo: fifoImplementation(),
    kernel: host.kernelRelease,
    arch: host.arch,
  };
}

/** What rootless mode does here: the same refusals the executor makes, said before a run meets them. */
function diagnoseRootless(cgroupVersion: 1 | 2): RootlessDiagnosis {
  const found = findRootless();
  const daemon = found
    ? {
        rootlesskitPid: found.record.rootlesskitPid,
        network: found.record.network,
        address: found.record.address,
        startedAt: found.record.startedAt,
        inside: found.inside,
      }
    : null;
  const hostNet = !found || found.record.network === "host";
  return {
    daemon,
    capabilities: [
      { what: "runs (root inside is this user outside)", works: found !== undefined, ...(found ? {} : { why: "no daemon: ctrexec rootless start" }) },
      { what: `network host (${hostNet ? "the host's network" : "rootlesskit's slirp4netns network"}), none`, works: true },
      { what: "network bridge", works: false, why: "ctrexec does not run CNI inside rootlesskit" },
      {
        what: "resource limits, cgroup parent",
        works: false,
        why:
          cgroupVersion === 1 ? "cgroup v1 cannot delegate limits to an unprivileged user" : "not applied through a delegated cgroup v2 subtree yet",
      },
      { what: "a user namespace per run (--userns)", works: false, why: "idmapped mounts cannot be made from inside the daemon's user namespace" },
      { what: "writing host files of other users in mounts", works: false, why: "they show as nobody: readable as by anyone, never writable" },
      { what: "host mounts made after the daemon started", works: false, why: "they do not propagate into its mount namespace: restart it" },
    ],
  };
}
