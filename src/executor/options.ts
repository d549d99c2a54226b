import { isAbsolute } from "node:path";
import type { ContainerdClient } from "../containerd/client.js";
import { DEFAULT_RUNTIME } from "../containerd/task-cleanup.js";
import { RECONNECT_BOUND_MS } from "../containerd/wait.js";
import { InvalidArgumentError } from "../errors.js";
import type { BridgeOptions } from "../network/bridge.js";
import type { NetworkProvider } from "../network/types.js";
import type { HostFeatures } from "../oci/host-features.js";
import { type DnsConfig, validateDnsConfig } from "../oci/resolv-conf.js";
import { validateCgroupParent } from "../oci/spec.js";
import { checkExplicitMaps } from "../oci/userns.js";
import { type Logger, silentLogger } from "../util/logger.js";
import type { Tracer } from "../util/tracing.js";
import { isExecutable } from "./shims/launcher.js";
import type { ShimSharing } from "./shims/policy.js";
import type { NetworkMode, UsernsMode } from "./types.js";
import { type ResolvedPools, resolvePools } from "./userns-ranges.js";

export const DEFAULT_STATE_DIR = "/var/lib/ctrexec";
export const DEFAULT_FIFO_ROOT = "/run/ctrexec/fifo";
/** How long a shim kept for reuse waits for the next run. */
const REUSE_IDLE_MS = 10_000;
/** How long after the last run `{ warm: "auto" }` lets its shims go. */
const WARM_AUTO_IDLE_MS = 30_000;
/** Above this, a fixed warm pool is surely a mistake (each slot is an idle shim and container). */
const MAX_WARM_SHIMS = 256;

/** How runs share containerd's shims; see ExecutorOptions.shims. */
export type ShimsOption = "reuse" | "off" | { warm: number | "auto" };

export interface ExecutorOptions {
  /** containerd socket; default `$CONTAINERD_ADDRESS` or /run/containerd/containerd.sock. */
  address?: string;
  /** containerd namespace; default `$CONTAINERD_NAMESPACE` or "ctrexec". */
  namespace?: string;
  /** An existing client to use (its address and namespace win); the executor then does not close it. */
  client?: ContainerdClient;
  /** State dir for run dirs, resolv.conf, hosts and local mounts. Default /var/lib/ctrexec. */
  root?: string;
  /** Where FIFO directories go. Default /run/ctrexec/fifo. */
  fifoRoot?: string;
  /** containerd runtime. Default io.containerd.runc.v2. */
  runtime?: string;
  /**
   * The runtime binary containerd runs for this executor's tasks (Tasks.Create's runtime_path): ctrexec's
   * launcher answers containerd's per-task `start` and `delete` calls to the runc v2 shim itself where their
   * outcome is certain, and hands the rest to containerd-shim-runc-v2. false: containerd runs
   * containerd-shim-runc-v2 for everything. Default: the launcher built with the package (build/ctrexec-shim)
   * when the runtime is io.containerd.runc.v2 and containerd is 1.6 or 1.7 (whose shim it mirrors); if
   * containerd cannot run it (another mount namespace, a noexec mount), the executor says so once and goes on
   * without it.
   */
  shimLauncher?: string | false;
  /**
   * The mode used for `network: "default"`. Default: "bridge" when the CNI plugins are installed and the
   * bridge network's config exists in its config dir (scripts/setup.sh writes it), else "host" (BuildKit's
   * "auto").
   */
  defaultNetwork?: NetworkMode;
  /** The built-in bridge network (CNI): config dir and name, or the built-in config's subnet, masquerade, pool. */
  bridge?: Omit<BridgeOptions, "stateDir" | "namespace" | "logger">;
  /** Extra or replacement network providers by mode name. */
  networkProviders?: Record<string, NetworkProvider>;
  dns?: DnsConfig;
  cgroupParent?: string;
  apparmorProfile?: string;
  /** Require SELinux labels (fails where the host has no SELinux). */
  selinux?: { processLabel?: string; mountLabel?: string };
  rootless?: boolean;
  /** Host path of an OTLP gRPC socket to offer inside containers. */
  traceSocket?: string;
  logger?: Logger;
  tracer?: Tracer;
  /** How long a run or an exec waits for containerd to come back after a restart before failing. Default 60 s. */
  reconnectBoundMs?: number;
  /**
   * How runs share containerd's shims (one shim never hosts two live runs: its crash ends one run, as without
   * sharing; docs/architecture.md, "Shims"):
   * - `"reuse"` (default): the next run reuses a finished run's shim, kept for `shimIdleMs` (default 10 s)
   *   after its last use; nothing extra runs. A one-shot caller gains nothing from it.
   * - `{ warm: n }`: n shims are started ahead, each lent to one run at a time; each costs an idle shim and an
   *   anchor container (`sleep` on the default rootfs) while the executor is open. 2 covers sequential runs;
   *   for parallel runs, twice the concurrency. `{ warm: "auto" }` sizes itself: nothing for the first run,
   *   then twice the peak number of runs in progress (2 to 16), nothing again after `shimIdleMs` (default
   *   30 s) without runs.
   * - `"off"`: every run starts its own shim. The default with `awaitCleanup`, which deletes every task
   *   before run() settles.
   */
  shims?: ShimsOption;
  /** How long an unused shim is kept (see `shims`). */
  shimIdleMs?: number;
  /** Run prune() once at create: remove what dead ctrexec processes left in this namespace. */
  pruneOnStart?: boolean;
  /**
   * Settle run() only after containerd has deleted the task and the container (BuildKit's order). By default
   * run() settles once the process has exited and everything the caller can see is released (streams, mounts,
   * stubs, the network namespace), and the task and container records are deleted in the background. close()
   * waits for them either way, and a run that reuses the id waits for its predecessor.
   */
  awaitCleanup?: boolean;
  /**
   * User namespaces (ProcessMeta.userns): `default` for runs that do not say (default "host"); `pool`: the
   * host ids `"auto"` hands out, 65536 per run, from `{ start, size }` (multiples of 65536; default start
   * 0x10000000, 1024 ranges) or from a user's /etc/subuid and /etc/subgid entries (`{ subuid: "name" }`).
   * Ranges are recorded in the state dir: runs of every executor and process sharing it never share one.
   */
  userns?: { default?: UsernsMode; pool?: { start: number; size: number } | { subuid: string } };
  /** Test hook: host facts instead of detecting them. */
  hostFeatures?: HostFeatures;
}

/** ExecutorOptions validated, with every default applied: the only form the executor's modules read. */
export interface ResolvedOptions {
  readonly address: string | undefined;
  readonly namespace: string | undefined;
  readonly client: ContainerdClient | undefined;
  /** As given; the executor replaces it by its real path once it exists. */
  readonly root: string;
  readonly fifoRoot: string;
  readonly runtime: string;
  readonly shimLauncher: string | false | undefined;
  readonly defaultNetwork: NetworkMode | undefined;
  readonly bridge: Omit<BridgeOptions, "stateDir" | "namespace" | "logger"> | undefined;
  readonly networkProviders: Readonly<Record<string, NetworkProvider>>;
  readonly dns: DnsConfig | undefined;
  readonly cgroupParent: string | undefined;
  readonly apparmorProfile: string | undefined;
  readonly selinux: { processLabel?: string; mountLabel?: string } | undefined;
  readonly rootless: boolean;
  readonly traceSocket: string | undefined;
  readonly logger: Logger;
  readonly tracer: Tracer | undefined;
  readonly reconnectBoundMs: number;
  readonly shims: ShimSharing;
  readonly pruneOnStart: boolean;
  readonly awaitCleanup: boolean;
  readonly hostFeatures: HostFeatures | undefined;
  readonly userns: { readonly default: UsernsMode; readonly pools: ResolvedPools };
}

function milliseconds(field: string, ms: number | undefined): number | undefined {
  if (ms !== undefined && (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0)) {
    throw new InvalidArgumentError(`${field} must be a number of milliseconds, not ${JSON.stringify(ms)}`, { field });
  }
  return ms;
}

function resolveShims(options: ExecutorOptions): ShimSharing {
  const idleMs = milliseconds("shimIdleMs", options.shimIdleMs);
  const shims = options.shims === undefined ? (options.awaitCleanup ? "off" : "reuse") : options.shims;
  if (shims === "off") return { kind: "off" };
  if (shims === "reuse") {
    // A kept shim keeps its founder's task: that is the background deletion awaitCleanup rules out.
    if (options.awaitCleanup) {
      throw new InvalidArgumentError('shims: "reuse" keeps finished tasks for later runs, which awaitCleanup rules out: use "off" or a warm pool', {
        field: "shims",
      });
    }
    return { kind: "reuse", idleMs: idleMs ?? REUSE_IDLE_MS };
  }
  const warm = typeof shims === "object" && shims !== null ? shims.warm : undefined;
  if (warm === "auto") return { kind: "warm", size: "auto", idleMs: idleMs ?? WARM_AUTO_IDLE_MS };
  if (typeof warm === "number" && Number.isInteger(warm) && warm >= 0 && warm <= MAX_WARM_SHIMS) {
    // No warm shims: the default sharing, as when `shims` is absent.
    if (warm === 0) return options.awaitCleanup ? { kind: "off" } : { kind: "reuse", idleMs: idleMs ?? REUSE_IDLE_MS };
    return { kind: "warm", size: warm, idleMs: idleMs ?? WARM_AUTO_IDLE_MS };
  }
  throw new InvalidArgumentError(
    `shims must be "reuse", "off" or { warm: n } with n "auto" or an integer from 0 to ${MAX_WARM_SHIMS}, not ${JSON.stringify(shims)}`,
    { field: "shims" },
  );
}

function resolveUserns(options: ExecutorOptions): ResolvedOptions["userns"] {
  const mode = options.userns?.default ?? "host";
  if (mode !== "host" && mode !== "auto") {
    if (typeof mode !== "object" || mode === null) {
      throw new InvalidArgumentError(`userns.default must be "host", "auto" or { uidMap, gidMap }, not ${JSON.stringify(mode)}`, {
        field: "userns.default",
      });
    }
    checkExplicitMaps(mode, "userns.default");
  }
  if (mode !== "host" && options.rootless) {
    throw new InvalidArgumentError("userns.default: a rootless containerd already runs every container in its user namespace", {
      field: "userns.default",
    });
  }
  return { default: mode, pools: resolvePools(options.userns?.pool) };
}

/** Validates `options` and applies every default, before anything is created. */
export function normalizeOptions(options: ExecutorOptions): ResolvedOptions {
  validateDnsConfig(options.dns);
  validateCgroupParent(options.cgroupParent);
  const runtime = options.runtime ?? DEFAULT_RUNTIME;
  const launcher = options.shimLauncher;
  if (launcher !== undefined && launcher !== false) {
    if (runtime !== DEFAULT_RUNTIME) {
      throw new InvalidArgumentError(`shimLauncher hands tasks to containerd-shim-runc-v2: it does not go with the runtime ${runtime}`, {
        field: "shimLauncher",
      });
    }
    if (!isAbsolute(launcher) || !isExecutable(launcher)) {
      throw new InvalidArgumentError(`shimLauncher ${launcher} is not an executable file given by its absolute path`, { field: "shimLauncher" });
    }
  }
  return {
    address: options.address,
    namespace: options.namespace,
    client: options.client,
    root: options.root ?? DEFAULT_STATE_DIR,
    fifoRoot: options.fifoRoot ?? DEFAULT_FIFO_ROOT,
    runtime,
    shimLauncher: launcher,
    defaultNetwork: options.defaultNetwork,
    bridge: options.bridge,
    networkProviders: { ...options.networkProviders },
    dns: options.dns,
    cgroupParent: options.cgroupParent,
    apparmorProfile: options.apparmorProfile,
    selinux: options.selinux,
    rootless: options.rootless === true,
    traceSocket: options.traceSocket,
    logger: options.logger ?? silentLogger,
    tracer: options.tracer,
    reconnectBoundMs: milliseconds("reconnectBoundMs", options.reconnectBoundMs) ?? RECONNECT_BOUND_MS,
    shims: resolveShims(options),
    pruneOnStart: options.pruneOnStart === true,
    awaitCleanup: options.awaitCleanup === true,
    hostFeatures: options.hostFeatures,
    userns: resolveUserns(options),
  };
}
