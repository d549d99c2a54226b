import { randomBytes } from "node:crypto";
import { setMaxListeners } from "node:events";
import { constants as fsc } from "node:fs";
import { access, mkdir, realpath } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { ContainerdClient } from "../containerd/client.js";
import { ProcessIO } from "../containerd/io.js";
import { CLEANUP_RPC_MS, DEFAULT_RUNTIME, deleteContainerRecord, deleteExecProcess, deleteTask } from "../containerd/run-task.js";
import { chooseShimLauncher, isExecutable, TaskCreator } from "../containerd/shim-launcher.js";
import { jsonAny, PROCESS_TYPE_URL, SPEC_TYPE_URL } from "../containerd/types.js";
import {
  AlreadyExistsError,
  CanceledError,
  ContainerExitedError,
  ExitError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  outcomeUnknown,
  PruneIncompleteError,
  UnavailableError,
} from "../errors.js";
import { ensureCwd } from "../fs/cwd.js";
import { removeTree } from "../fs/remove-tree.js";
import { hostNetwork, noneNetwork } from "../network/basic.js";
import { autoNetworkMode } from "../network/auto.js";
import { BridgeProvider, type BridgeOptions } from "../network/bridge.js";
import type { NetworkProvider } from "../network/types.js";
import { DEFAULT_HOSTNAME, normalizeExtraHosts } from "../oci/hosts.js";
import { detectHostFeatures, type HostFeatures } from "../oci/host-features.js";
import type { DnsConfig } from "../oci/resolv-conf.js";
import { validateDnsConfig } from "../oci/resolv-conf.js";
import { serializeSpec } from "../oci/serialize.js";
import { generateSpec, mergeEnv, type SpecInput, validateCgroupParent, validateConsoleSize, validateMountStrings } from "../oci/spec.js";
import type { Mount as OciMount, Process as OciProcess, Spec } from "../oci/types.js";
import { getUser, processGids } from "../oci/user.js";
import { ensureDefaultRootfs } from "../rootfs/default-rootfs.js";
import { KeyedLimit } from "../util/keyed-limit.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { ReleaseStack } from "../util/release-stack.js";
import { type Span, startSpan, type Tracer } from "../util/tracing.js";
import { newContainerId, validateContainerId } from "./container-id.js";
import { mountDefaultRoot } from "./default-root.js";
import { EnvFiles } from "./env-files.js";
import { exitedOr } from "./exec-exited.js";
import { LABEL, runLabels } from "./labels.js";
import { type LocalMount, mountLocally, tooLongForTheKernel } from "./local-mount.js";
import { MountStubsCleaner } from "./mount-stubs.js";
import { OomWatch } from "./oom-watch.js";
import { runProcess } from "./run-process.js";
import { prune } from "./prune.js";
import { awaitRetiredRecord, Retirements } from "./retire.js";
import { enterRoot } from "./root-stubs.js";
import { createRunDir, fifoDir, removeRunDir, retireRunDir, runsDir } from "./run-dirs.js";
import { RunState } from "./running.js";
import { mountSubPath } from "./selector-mount.js";
import { SHIM_GROUP_ANNOTATION, ShimGroup, uniqueShimGroupName } from "./shim-group.js";
import { ShimPool } from "./shim-pool.js";
import { ShimReuse } from "./shim-reuse.js";
import { toStartError } from "./start-error.js";
import type { ExecOptions, NetworkMode, ProcessInfo, ProcessMeta, RunRequest, RunResult } from "./types.js";
import { sampleUsage } from "./usage.js";

export const DEFAULT_STATE_DIR = "/var/lib/ctrexec";
export const DEFAULT_FIFO_ROOT = "/run/ctrexec/fifo";
/** See #shimTurns: 4 to 16 measured alike (30 exec Starts in ~0.8 s); the stall starts past ~20. */
const SHIM_CALLS_AT_ONCE = 8;

export interface ExecutorOptions {
  /** containerd socket; default `$CONTAINERD_ADDRESS` or /run/containerd/containerd.sock. */
  address?: string;
  /** containerd namespace; default `$CONTAINERD_NAMESPACE` or "ctrexec". */
  namespace?: string;
  /** An existing client to use (its address and namespace win); the executor then does not close it. */
  client?: ContainerdClient;
  /** State dir for resolv.conf, hosts and local mounts. Default /var/lib/ctrexec. */
  root?: string;
  /** Where FIFO directories go. Default /run/ctrexec/fifo. */
  fifoRoot?: string;
  /** containerd runtime. Default io.containerd.runc.v2. */
  runtime?: string;
  /**
   * The runtime binary containerd runs for this executor's tasks (Tasks.Create's runtime_path): ctrexec's
   * launcher answers containerd's per-task `start` and `delete` calls to the runc v2 shim itself where their
   * outcome is certain, and hands the rest to containerd-shim-runc-v2 (docs/performance.md). false: containerd
   * runs containerd-shim-runc-v2 for everything. Default: the launcher built with the package
   * (build/ctrexec-shim) when the runtime is io.containerd.runc.v2 and containerd is 1.6 or 1.7 (whose shim it
   * mirrors); if containerd cannot run it (another mount namespace, a noexec mount), the executor says so once
   * and goes on without it.
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
  /** How long a run waits for containerd to come back after a restart before failing. Default 60 s. */
  reconnectBoundMs?: number;
  /**
   * Share one long-lived shim between runs (the runc v2 shim's group annotation, kept up by an idle anchor
   * container): runs start faster, but if that shim dies every run in the group dies with it. `true` names the
   * group after this process; a string names it. Default off.
   */
  shimGroup?: boolean | string;
  /**
   * Keep this many shims started ahead, each lent to one run at a time (`shim-pool.ts`): a run skips the shim
   * start, with the same blast radius as without (a shim crash ends one run). Costs an idle shim and an anchor
   * container (`sleep` on the default rootfs) per slot while the executor is open. 2 covers sequential runs
   * (the previous run's task is still being deleted in its shim); for parallel runs, twice the concurrency
   * (measured at 4-way: 60% of runs found a warm shim with 4, all of them with 8).
   * `"auto"` sizes the pool itself: nothing for the first run, then twice the peak number of runs in progress
   * (2 to 16), and nothing again once no run has started for `warmShimsIdleMs`.
   * Default 0 (off). Not together with `shimGroup`.
   */
  warmShims?: number | "auto";
  /** With `warmShims: "auto"`: how long after the last run the warm shims are let go. Default 30 s. */
  warmShimsIdleMs?: number;
  /**
   * Let the next run reuse a finished run's shim (`shim-reuse.ts`): the run that started a shim keeps its
   * stopped task until no run has used the shim for `reuseShimsIdleMs` (and at most 2 min after it exited), so
   * later runs skip the shim start. One run at a time per shim, as without reuse. Default on; off with `awaitCleanup`,
   * `warmShims` or `shimGroup`, which decide about shims themselves. A one-shot caller gains nothing from it.
   */
  reuseShims?: boolean;
  /** With `reuseShims`: how long an unused shim is kept. Default 10 s. */
  reuseShimsIdleMs?: number;
  /** Run prune() once at create: remove what dead ctrexec processes left in this namespace. */
  pruneOnStart?: boolean;
  /**
   * Settle run() only after containerd has deleted the task and the container (BuildKit's order). By default
   * run() settles once the process has exited and everything the caller can see is released (streams, mounts,
   * stubs, the network namespace), and the task and container records are deleted in the background: ~20 ms
   * less per run. close() waits for them either way, and a run that reuses the id waits for its predecessor.
   */
  awaitCleanup?: boolean;
  /** Test hook: host facts instead of detecting them. */
  hostFeatures?: HostFeatures;
}

/**
 * Runs processes in containers through containerd with BuildKit's semantics (reference §2–§4), fixed where
 * BuildKit is weak (docs/differences-from-buildkit.md).
 */
export class ContainerdExecutor implements AsyncDisposable {
  readonly client: ContainerdClient;
  readonly root: string;
  readonly fifoRoot: string;
  readonly #options: ExecutorOptions;
  readonly #ownsClient: boolean;
  readonly #logger: Logger;
  readonly #host: HostFeatures;
  readonly #env: EnvFiles;
  readonly #networks: Map<string, NetworkProvider>;
  readonly #running = new Map<string, RunState>();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #closing = new AbortController();
  readonly #oom: OomWatch;
  readonly #shimGroup: ShimGroup | undefined;
  readonly #shimPool: ShimPool | undefined;
  readonly #shimReuse: ShimReuse | undefined;
  readonly #retirements: Retirements;
  readonly #tasks: TaskCreator;
  /**
   * runc calls in flight per shim: an exec's Start in its container's shim, a run's Tasks.Create and Start in
   * the one shared shim (`shimGroup`). containerd 1.6's shim wakes every runc call in flight for each exit it
   * reaps, with a 1 ms timeout per busy one: past ~20 calls at once in one shim they stall each other, and 30
   * exec Starts into one container took 13–25 s instead of 0.8 (docs/reliability.md).
   */
  readonly #shimTurns = new KeyedLimit(SHIM_CALLS_AT_ONCE);
  /** This namespace's FIFO directory under the FIFO root. */
  readonly #fifos: string;
  #closed: Promise<void> | undefined;

  private constructor(options: ExecutorOptions, client: ContainerdClient, containerdVersion: string) {
    this.#options = options;
    this.client = client;
    this.#ownsClient = options.client === undefined;
    this.root = options.root ?? DEFAULT_STATE_DIR;
    this.fifoRoot = options.fifoRoot ?? DEFAULT_FIFO_ROOT;
    this.#logger = options.logger ?? silentLogger;
    this.#host = options.hostFeatures ?? detectHostFeatures();
    this.#env = new EnvFiles({ dir: this.root, dns: options.dns, logger: this.#logger });
    this.#networks = new Map<string, NetworkProvider>([
      ["host", hostNetwork()],
      ["none", noneNetwork()],
      ...Object.entries(options.networkProviders ?? {}),
    ]);
    this.#oom = new OomWatch(client, this.#logger);
    this.#retirements = new Retirements(client, this.#logger, this.#closing.signal);
    // Every run and exec listens on the executor's close signal: many at once is normal, not a leak.
    setMaxListeners(0, this.#closing.signal);
    this.#fifos = fifoDir(this.fifoRoot, client.namespace);
    this.#tasks = new TaskCreator(client, chooseShimLauncher(options.shimLauncher, options.runtime ?? DEFAULT_RUNTIME, containerdVersion), this.#logger);
    this.#shimGroup = options.shimGroup
      ? new ShimGroup(client, this.#tasks, typeof options.shimGroup === "string" ? options.shimGroup : uniqueShimGroupName(), this.#logger)
      : undefined;
    this.#shimPool = options.warmShims
      ? new ShimPool({
          client,
          tasks: this.#tasks,
          size: options.warmShims,
          rootfs: () => ensureDefaultRootfs(this.root),
          runtime: options.runtime ?? DEFAULT_RUNTIME,
          logger: this.#logger,
          idleMs: options.warmShimsIdleMs,
        })
      : undefined;
    this.#shimReuse =
      options.reuseShims !== false && !options.awaitCleanup && !options.warmShims && !options.shimGroup
        ? new ShimReuse({ idleMs: options.reuseShimsIdleMs })
        : undefined;
  }

  /** Connects (fails with UnavailableError if containerd does not answer) and prepares the state dirs. */
  static async create(options: ExecutorOptions = {}): Promise<ContainerdExecutor> {
    validateDnsConfig(options.dns);
    validateCgroupParent(options.cgroupParent);
    const warm = options.warmShims;
    if (warm !== undefined && warm !== "auto" && (!Number.isInteger(warm) || warm < 0 || warm > 256)) {
      throw new InvalidArgumentError(`warmShims must be "auto" or an integer from 0 to 256, not ${JSON.stringify(warm)}`, { field: "warmShims" });
    }
    for (const field of ["warmShimsIdleMs", "reuseShimsIdleMs"] as const) {
      const ms = options[field];
      if (ms !== undefined && (!Number.isFinite(ms) || ms < 0)) {
        throw new InvalidArgumentError(`${field} must be a number of milliseconds, not ${ms}`, { field });
      }
    }
    const launcher = options.shimLauncher;
    if (launcher !== undefined && launcher !== false) {
      if ((options.runtime ?? DEFAULT_RUNTIME) !== DEFAULT_RUNTIME) {
        throw new InvalidArgumentError(`shimLauncher hands tasks to containerd-shim-runc-v2: it does not go with the runtime ${options.runtime}`, {
          field: "shimLauncher",
        });
      }
      if (!isAbsolute(launcher) || !isExecutable(launcher)) {
        throw new InvalidArgumentError(`shimLauncher ${launcher} is not an executable file given by its absolute path`, { field: "shimLauncher" });
      }
    }
    if (options.warmShims && options.shimGroup) {
      throw new InvalidArgumentError("warmShims and shimGroup exclude each other: choose one way to share shims", { field: "warmShims" });
    }
    const client = options.client ?? new ContainerdClient({ address: options.address, namespace: options.namespace });
    let containerdVersion: string;
    /** The state dir by its real path: runc refuses a rootfs path through a symlink, and mount points are compared as mountinfo shows them. */
    let realRoot: string;
    try {
      containerdVersion = (await client.version()).version;
      const root = options.root ?? DEFAULT_STATE_DIR;
      for (const [what, dir] of [
        ["state dir", runsDir(root, client.namespace)],
        ["FIFO root", options.fifoRoot ?? DEFAULT_FIFO_ROOT],
      ] as const) {
        try {
          await mkdir(dir, { recursive: true, mode: 0o700 });
          await access(dir, fsc.W_OK);
        } catch (err) {
          throw new FailedPreconditionError(`the ${what} ${dir} is not usable: ${(err as Error).message}; choose a writable directory`, {
            cause: err,
          });
        }
      }
      realRoot = await realpath(root);
    } catch (err) {
      if (!options.client) await client.close();
      throw err;
    }
    const executor = new ContainerdExecutor({ ...options, root: realRoot }, client, containerdVersion);
    if (options.pruneOnStart) {
      try {
        for (const line of await executor.prune()) executor.#logger.info(`pruned ${line}`);
      } catch (err) {
        // What a dead run left and prune could not remove is no reason not to run: it is said, and retried by
        // the next prune.
        if (err instanceof PruneIncompleteError) {
          for (const line of err.removed) executor.#logger.info(`pruned ${line}`);
          executor.#logger.warn(err.message, { failures: err.failures.length });
        } else {
          await executor.close();
          throw err;
        }
      }
    }
    return executor;
  }

  get namespace(): string {
    return this.client.namespace;
  }

  /** The ids of the runs of this executor that are in progress. */
  get runs(): string[] {
    return [...this.#running.keys()];
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    void p.then(
      () => this.#inflight.delete(p),
      () => this.#inflight.delete(p),
    );
    return p;
  }

  #bridge: Promise<NetworkProvider> | undefined;
  #defaultMode: Promise<string> | undefined;

  /** What `network: "default"` means for this executor (see ExecutorOptions.defaultNetwork). */
  defaultNetwork(): Promise<string> {
    this.#defaultMode ??= this.#options.defaultNetwork
      ? Promise.resolve(this.#options.defaultNetwork)
      : autoNetworkMode(this.#options.bridge);
    return this.#defaultMode;
  }

  async #network(mode: NetworkMode | undefined): Promise<{ name: string; provider: NetworkProvider }> {
    const name = !mode || mode === "default" ? await this.defaultNetwork() : mode;
    const provider = this.#networks.get(name);
    if (provider) return { name, provider };
    if (name === "bridge") {
      // Made on first use: executors that never bridge never touch CNI.
      this.#bridge ??= BridgeProvider.create({
        ...this.#options.bridge,
        stateDir: this.root,
        namespace: this.namespace,
        logger: this.#logger,
      }).catch((err: unknown) => {
        this.#bridge = undefined;
        throw err;
      });
      return { name, provider: await this.#bridge };
    }
    throw new InvalidArgumentError(`unknown network mode ${name}; available: ${[...this.#networks.keys(), "bridge"].join(", ")}`, {
      field: "network",
    });
  }

  /**
   * Creates a container for `req.process` on `req.root` plus `req.mounts`, runs it to completion and removes
   * everything it made before settling. Resolves with the exit code and resource usage when the code is valid;
   * rejects with ExitError otherwise (137 with the signal's reason as cause when canceled), StartError when the
   * command cannot start, and the typed errors of errors.ts for everything else.
   */
  run(req: RunRequest): Promise<RunResult> {
    return this.#track(this.#runTracked(req));
  }

  async #runTracked(req: RunRequest): Promise<RunResult> {
    if (this.#closed) throw new CanceledError("the executor is closed");
    const id = req.id ?? newContainerId();
    validateContainerId(id);
    if (this.#running.has(id)) throw new AlreadyExistsError(`container ${id} already exists`);
    const state = new RunState(id);
    this.#running.set(id, state);
    const span = startSpan(this.#options.tracer, "ctrexec.run", { "container.id": id });
    const signal = req.signal ? AbortSignal.any([req.signal, this.#closing.signal]) : this.#closing.signal;
    const stack = new ReleaseStack(this.#logger);
    let failure: unknown;
    try {
      // The same id again right after a run: let the earlier run's records go first.
      if (this.#retirements.has(id)) {
        this.#shimReuse?.release(id);
        // A kept founder goes only after its shim's borrower: the caller's signal ends the wait.
        await this.#retirements.settled(id, signal);
      }
      return await this.#run(id, req, state, stack, span, signal);
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      // A release learns whether the run succeeded (a commit keeps only a successful step's changes).
      await stack.release({ succeeded: failure === undefined });
      this.#running.delete(id);
      state.finish(failure);
      span.end();
      // Only a failed delete of the task or container (or of a commit, which keeps the result) changes a
      // successful result, as in BuildKit; the stack logged every other failure.
      if (failure === undefined && stack.failedRun) throw stack.failedRun;
    }
  }

  async #run(id: string, req: RunRequest, state: RunState, stack: ReleaseStack, span: Span, signal: AbortSignal): Promise<RunResult> {
    const meta = req.process.meta;
    const checkpoint = () => {
      if (signal.aborted) throw new CanceledError(`run ${id} was canceled before it started`, { cause: signal.reason });
    };
    checkpoint();
    const hostname = meta.hostname || DEFAULT_HOSTNAME;
    const wantsGateway = (meta.extraHosts ?? []).some((h) => h.ip === "host-gateway");
    // host-gateway is resolved once the network exists; validate the rest now.
    normalizeExtraHosts((meta.extraHosts ?? []).filter((h) => h.ip !== "host-gateway"));
    const specBase: Omit<SpecInput, "user" | "network"> = {
      id,
      namespace: this.namespace,
      args: meta.args ?? [],
      env: meta.env,
      cwd: meta.cwd,
      hostname,
      terminal: meta.tty,
      consoleSize: meta.consoleSize,
      readonlyRootfs: meta.readonlyRootfs || req.root?.readonly,
      ulimits: meta.ulimits,
      cgroupParent: meta.cgroupParent || this.#options.cgroupParent,
      resources: meta.resources,
      security: meta.security,
      apparmorProfile: this.#options.apparmorProfile,
      selinux: this.#options.selinux,
      traceSocket: this.#options.traceSocket,
      rootless: this.#options.rootless,
      mounts: (req.mounts ?? []).map((m) => ({ destination: m.dest, type: "bind" })),
      ...(this.#shimGroup ? { annotations: { [SHIM_GROUP_ANNOTATION]: this.#shimGroup.name } } : {}),
    };
    // Everything that can be checked without side effects is checked now, before anything is created.
    generateSpec({ ...specBase, user: { uid: 0, gid: 0, additionalGids: [] } }, this.#host);
    // A C string ends at a NUL: the sub-path opened would not be the one asked for.
    for (const m of req.mounts ?? []) {
      if (m.selector?.includes("\0")) throw new InvalidArgumentError(`mount ${JSON.stringify(m.dest)}: its selector must not contain NUL bytes`, { field: "mounts" });
    }
    for (const [k, v] of Object.entries(req.labels ?? {})) {
      if (k.startsWith("ctrexec.")) throw new InvalidArgumentError(`label ${k}: the "ctrexec." prefix is reserved`, { field: "labels" });
      if (k === "" || k.length + v.length > 4096) {
        throw new InvalidArgumentError(`label ${JSON.stringify(k.slice(0, 50))}: keys must be non-empty and key+value at most 4096 bytes`, {
          field: "labels",
        });
      }
    }

    // Set once the exit was seen (and awaitCleanup is off): the task and the record are then deleted in the
    // background, the FIFO directory and the run dir removed there too.
    let handOver = false;
    /** No root given: the built-in one, through an overlay in the run dir (default-root.ts). */
    const defaultRoot = req.root === undefined;
    const { provider } = await this.#network(meta.network);
    /**
     * Whether this run's task is known not to exist (none made yet, or deleted). While it may exist, its
     * container may still use what this run holds: the run dir, the network namespace, the shim.
     */
    const taskGone = { value: true };
    const runDir = await createRunDir(this.root, this.namespace, id);
    stack.defer("remove run dir", () => {
      // A task that may live on (containerd away, a kill that timed out) may still write into the run dir (the
      // default root's upper layer): it stays until the background retry has deleted that task, or for prune.
      if (!handOver && !taskGone.value) return this.#retirements.whenOrphanGone(id, () => this.#releaseRunDir(runDir, false, defaultRoot));
      return this.#releaseRunDir(runDir, handOver, defaultRoot);
    });
    const net = await provider.create({ id, hostname, signal, privileged: meta.security === "insecure" });
    // Released after "delete task": the namespace may serve another run only if nothing of this one is left in it.
    stack.defer("close network namespace", () => net.close({ reusable: handOver || taskGone.value }));
    if (net.hostNetwork) this.#logger.info("enabling HostNetworking", { id });
    if (wantsGateway && !net.gateway) {
      throw new InvalidArgumentError(`host-gateway is not available with network ${meta.network ?? "default"}`, { field: "extraHosts" });
    }
    const extraHosts = normalizeExtraHosts(
      (meta.extraHosts ?? []).map((h) => (h.ip === "host-gateway" ? { host: h.host, ip: net.gateway! } : h)),
    );
    checkpoint();
    const resolvConfPath = await this.#env.resolvConf(net.hostNetwork);
    const hosts = await this.#env.hosts(hostname, extraHosts, runDir);
    stack.defer("remove hosts file", () => hosts.release());

    let local: LocalMount;
    if (req.root) {
      const rootRef = await req.root.source.mount(false);
      stack.defer("release root mount", (ctx) => rootRef.release(ctx), { failsRun: rootRef.keepsResult === true });
      validateMountStrings("/", rootRef.mounts);
      local = await mountLocally(rootRef.mounts, runDir);
    } else {
      local = await mountDefaultRoot(await ensureDefaultRootfs(this.root), runDir, this.#logger);
    }
    // The default root's overlay goes with the run dir, off the run's path once the exit was seen.
    stack.defer("unmount rootfs", () => (handOver && defaultRoot ? undefined : local.unmount()));
    state.rootfs = local.path;
    // The default root's stubs are in its run's own upper layer, and go with it.
    if (!defaultRoot) {
      const stubs = await MountStubsCleaner.prepare(
        local.path,
        (req.mounts ?? []).map((m) => m.dest),
        { recursive: meta.removeMountStubsRecursive ?? true, logger: this.#logger },
      );
      // Concurrent runs on one writable root share its mount points, across executors and processes too: stubs
      // are removed when the last run on that root is done (root-stubs.ts).
      const rootEntry = enterRoot(this.root, local.path, stubs, this.#logger);
      if (rootEntry) stack.defer("remove mount stubs", () => rootEntry.leave());
    }
    checkpoint();

    const user = getUser(local.path, meta.user ?? "");
    await ensureCwd(local.path, meta.cwd || "/", user.uid, user.gid);

    const mounts: OciMount[] = [];
    for (const m of req.mounts ?? []) {
      const ref = await m.source.mount(m.readonly ?? false);
      stack.defer(`release mount ${m.dest}`, (ctx) => ref.release(ctx), { failsRun: ref.keepsResult === true });
      validateMountStrings(m.dest, ref.mounts);
      const selector = m.selector && m.selector !== "/" ? m.selector : undefined;
      if (!selector && !ref.mounts.some(tooLongForTheKernel)) {
        for (const cm of ref.mounts) mounts.push({ destination: m.dest, type: cm.type, source: cm.source, options: [...cm.options] });
        continue;
      }
      // Mounted on the host first, then bind-mounted in: a sub-path (selector) is resolved inside the mount
      // without following symlinks out, and an overlay whose options would not fit the kernel's page (long
      // lowerdir chains, §5.7) never reaches runc.
      const local = await mountLocally(ref.mounts, runDir);
      stack.defer(`unmount ${m.dest}`, () => local.unmount());
      let source = local.path;
      if (selector) {
        // Opened and checked once, mounted from its fd in the run dir: nothing can redirect it afterwards.
        source = await mountSubPath(local.path, selector, { dest: m.dest, readonly: m.readonly ?? false, runDir, stack, logger: this.#logger });
      }
      mounts.push({ destination: m.dest, type: "bind", source, options: m.readonly ? ["rbind", "ro"] : ["rbind"] });
    }
    checkpoint();

    span.addEvent("Environment prepared");
    const lease = this.#shimPool?.take();
    if (lease) stack.defer("return the warm shim", () => handOver || lease.done(taskGone.value));
    // A caller's own id may be used again at once, by another executor too: such a run never keeps its record.
    const reuse = this.#shimReuse?.take(req.id === undefined);
    /** Whether the run got as far as asking its shim for a task (a failure after that may be the shim's). */
    let shimAsked = false;
    if (reuse) stack.defer("end the shim reuse lease", () => handOver || reuse.end(shimAsked && !signal.aborted, taskGone.value));
    const group = lease?.group ?? reuse?.group;
    /** The one shim every run of this executor shares (`shimGroup`), whose runc calls take turns (#shimTurns). */
    const sharedShim = this.#shimGroup?.name;
    const spec = generateSpec(
      {
        ...specBase,
        ...(group ? { annotations: { [SHIM_GROUP_ANNOTATION]: group } } : {}),
        user: { uid: user.uid, gid: user.gid, additionalGids: user.additionalGids },
        network: net.namespace,
        resolvConfPath,
        hostsPath: hosts.path,
        mounts,
        // runc mounts the root inside the container's own mount namespace, which dies with the process: once
        // it has exited, nothing outside references the root, and the task can be deleted later (awaitCleanup).
        rootPath: local.path,
      },
      this.#host,
    );
    state.spec = spec;
    span.addEvent("Spec generated");

    const labels = {
      ...req.labels,
      ...runLabels({ rootfs: local.path, args: spec.process!.args, stateDir: this.root, fifoRoot: this.#fifos, runDir }),
      ...(reuse?.founder ? { [LABEL.shimFounder]: "true" } : {}),
    };
    // The FIFOs are made while containerd stores the record: neither needs the other.
    const p = req.process;
    const ioReady = ProcessIO.create({
      fifoRoot: this.#fifos,
      id,
      stdin: p.stdin,
      stdout: p.stdout,
      stderr: p.stderr,
      terminal: meta.tty,
      logger: this.#logger,
    });
    ioReady.catch(() => {}); // awaited below; a failure must not count as unhandled meanwhile
    stack.defer("close IO", () => this.#releaseIO(ioReady, handOver));
    const record = { id, labels, runtime: { name: this.#options.runtime ?? DEFAULT_RUNTIME }, spec: jsonAny(SPEC_TYPE_URL, serializeSpec(spec)) };
    // Creations never take the caller's signal: canceled halfway, containerd may still make the record (or the
    // task), which nothing would then delete. A cancel is acted on once they returned (checkpoint, runProcess).
    const createRecord = () =>
      this.client.containers.create(record).catch(async (err: unknown) => {
        // A deadline or a lost connection does not say whether the record was made: remove it if it is ours.
        if (outcomeUnknown(err)) await this.#removeRecordIfOurs(id, runDir);
        throw err;
      });
    try {
      await createRecord();
    } catch (err) {
      // The same id right after a run of another executor or process, whose records are still going.
      if (!(err instanceof AlreadyExistsError) || !(await awaitRetiredRecord(this.client, id, signal))) throw err;
      await createRecord();
    }
    stack.defer("delete container", async () => {
      if (handOver) return;
      await this.#deleteContainer(id, taskGone);
      span.addEvent("Container deleted");
    }, { failsRun: true });
    span.addEvent("Container record created");

    if (this.#shimGroup) await this.#shimGroup.ensure(() => ensureDefaultRootfs(this.root), this.#options.runtime);
    const io = await ioReady;
    span.addEvent("IO created");
    checkpoint();

    // What containerd reported about an earlier container with this id is not this run's.
    this.#oom.forget(id);
    shimAsked = true;
    try {
      const create = () => this.#tasks.create({ containerId: id, ...io.config });
      await (sharedShim ? this.#shimTurns.run(sharedShim, create) : create());
    } catch (err) {
      span.addEvent("Container start failed", { "error.message": (err as Error).message });
      // A deadline or a lost connection does not say whether the task was made: delete it if it was.
      if (outcomeUnknown(err)) taskGone.value = await deleteTask(this.client, id, this.#logger).catch(() => false);
      throw toStartError(err, spec.process!.args[0] ?? "");
    }
    taskGone.value = false;
    stack.defer("delete task", async () => {
      if (handOver) {
        const reused = reuse?.handOver(id);
        this.#retirements.retire(id, lease ? (gone) => lease.done(gone) : reused?.taskDone, reused?.gate);
        span.addEvent("Task handed over for deletion");
        return;
      }
      taskGone.value = await deleteTask(this.client, id, this.#logger);
      span.addEvent("Task deleted");
    }, { failsRun: true });
    span.addEvent("Container created");
    checkpoint();

    let started = false;
    const outcome = await runProcess({
      client: this.client,
      ref: { containerId: id },
      io,
      command: spec.process!.args[0] ?? "",
      logger: this.#logger,
      span,
      signal,
      resize: p.resize,
      signals: p.signals,
      tty: meta.tty,
      initialSize: meta.consoleSize,
      reconnectBoundMs: this.#options.reconnectBoundMs,
      ...(sharedShim ? { startTurn: <T>(start: () => Promise<T>) => this.#shimTurns.run(sharedShim, start) } : {}),
      onStarted: (pid) => {
        if (started) return;
        started = true;
        state.markStarted();
        span.addEvent("Container started");
        req.onStarted?.({ id, pid });
      },
    });

    // An exit was seen, so the container's mount namespace is gone with its last process.
    handOver = !this.#options.awaitCleanup && outcome.waitError === undefined;
    const usage = spec.linux?.cgroupsPath ? sampleUsage(spec.linux.cgroupsPath) : {};
    const oomKilled = this.#oom.take(id) || (usage.oomKills ?? 0) > 0;
    delete usage.oomKills;
    return this.#result(id, outcome, meta, signal, usage, oomKilled);
  }

  #result(
    id: string,
    outcome: { exitCode: number; canceled: boolean; waitError?: unknown },
    meta: ProcessMeta,
    signal: AbortSignal,
    usage: RunResult["usage"],
    oomKilled: boolean,
  ): RunResult {
    const valid = meta.validExitCodes?.length ? meta.validExitCodes : [0];
    if (outcome.waitError === undefined && valid.includes(outcome.exitCode)) return { id, exitCode: outcome.exitCode, usage };
    if (outcome.waitError instanceof UnavailableError) throw outcome.waitError;
    if (outcome.waitError !== undefined) {
      throw new ExitError(outcome.exitCode, {
        cause: outcome.waitError,
        message: `failure waiting for process: ${(outcome.waitError as Error).message}`,
      });
    }
    if (outcome.canceled) {
      const reason = signal.reason as unknown;
      const why = reason instanceof Error ? reason.message : String(reason);
      throw new ExitError(outcome.exitCode, { cause: reason, oomKilled, message: `exit code: ${outcome.exitCode}: canceled: ${why}` });
    }
    throw new ExitError(outcome.exitCode, { oomKilled });
  }

  /**
   * After a seen exit, a run dir is moved out of its id's way and removed in the background (settled() waits),
   * with the default root's overlay (`mounted`) still in it; otherwise it is removed before the run settles.
   */
  async #releaseRunDir(dir: string, handOver: boolean, mounted: boolean): Promise<void> {
    if (!handOver) return removeRunDir(dir);
    const remove = (d: string) => (mounted ? removeTree(d) : removeRunDir(d));
    let retired: string | undefined;
    try {
      retired = retireRunDir(dir);
    } catch {
      return remove(dir);
    }
    if (retired) this.#retirements.track(retired, remove(retired));
  }

  /** Closes a process's IO; after a seen exit the streams have ended, and the FIFO directory goes in the background. */
  async #releaseIO(ioReady: Promise<ProcessIO>, handOver: boolean): Promise<void> {
    const io = await ioReady.catch(() => undefined);
    if (io?.dir && handOver) this.#retirements.track(io.dir, io.close());
    else await io?.close();
  }

  /** Deletes record `id` if it exists and is this run's (its run dir label): after a create whose outcome is unknown. */
  async #removeRecordIfOurs(id: string, runDir: string): Promise<void> {
    const opts = { timeoutMs: CLEANUP_RPC_MS };
    const labels = await this.client.containers.get(id, opts).then((c) => c.labels, () => undefined);
    if (labels?.[LABEL.runDir] === runDir) await deleteContainerRecord(this.client, id).catch(() => {});
  }

  async #deleteContainer(id: string, taskGone: { value: boolean }): Promise<void> {
    if (!taskGone.value) {
      // Deleting the record now would orphan the task; keep it, and try again until containerd lets us (and if
      // this process dies first, prune finishes it).
      this.#logger.error("the task could not be deleted; will retry in the background", { id });
      this.#retirements.retryLater(id);
      return;
    }
    await deleteContainerRecord(this.client, id);
  }

  /**
   * Runs another process in a running container: one of this executor's runs (waiting for it to start if it
   * is still starting), or one started by any other ctrexec process on this host. Resolves when the process
   * exits with a valid code; rejects like run() otherwise, with NotFoundError for an unknown id and
   * ContainerExitedError when the container's process is gone.
   */
  exec(id: string, process: ProcessInfo, options: ExecOptions = {}): Promise<void> {
    return this.#track(this.#exec(id, process, options));
  }

  async #exec(id: string, proc: ProcessInfo, options: ExecOptions): Promise<void> {
    if (this.#closed) throw new CanceledError("the executor is closed");
    validateContainerId(id);
    const meta = proc.meta;
    if (!meta.args?.length) throw new InvalidArgumentError("no command given: args is empty", { field: "args" });
    if (meta.cwd && !meta.cwd.startsWith("/")) {
      throw new InvalidArgumentError(`working directory ${JSON.stringify(meta.cwd)} must be an absolute path`, { field: "cwd" });
    }
    validateConsoleSize(meta.consoleSize);
    const signal = options.signal ? AbortSignal.any([options.signal, this.#closing.signal]) : this.#closing.signal;
    const target = await this.#execTarget(id, signal);

    const base: OciProcess = target.process;
    const process: OciProcess = { ...base, args: [...meta.args], terminal: meta.tty ?? false };
    delete process.consoleSize;
    if (meta.tty && meta.consoleSize) process.consoleSize = { height: meta.consoleSize.rows, width: meta.consoleSize.cols };
    if (meta.cwd) process.cwd = meta.cwd;
    // Same env rule as run: inherit the container's, then override by key; a bare KEY unsets (§12.9).
    if (meta.env?.length) process.env = mergeEnv(base.env ?? [], meta.env);
    if (meta.user) {
      const u = getUser(target.rootfs, meta.user);
      process.user = { uid: u.uid, gid: u.gid, additionalGids: processGids(u) };
    }
    for (const a of [...process.args, ...(process.env ?? [])]) {
      if (a.includes("\0")) throw new InvalidArgumentError("args and env must not contain NUL bytes", { field: "args" });
    }

    const execId = `exec${randomBytes(8).toString("hex")}`;
    const span = startSpan(this.#options.tracer, "ctrexec.exec", { "container.id": id, "exec.id": execId });
    const stack = new ReleaseStack(this.#logger);
    try {
      // The shim opens an exec's FIFOs at Start: they are made while containerd registers the exec.
      const streams = { fifoRoot: this.#fifos, id: `${id}.${execId}`, stdin: proc.stdin, stdout: proc.stdout, stderr: proc.stderr, terminal: meta.tty };
      const planned = ProcessIO.plan(streams);
      let handOver = false; // as in run
      const ioReady = ProcessIO.create({ ...streams, planned, logger: this.#logger });
      ioReady.catch(() => {}); // awaited below; a failure must not count as unhandled meanwhile
      stack.defer("close IO", () => this.#releaseIO(ioReady, handOver));
      // Not the caller's signal, as for a run's creations: a canceled Exec may still register the process.
      const register = this.client.tasks.exec({ containerId: id, execId, spec: jsonAny(PROCESS_TYPE_URL, serializeSpec(process)), ...planned.config });
      // The container's process may have exited since #execTarget looked.
      await register.catch(async (err: unknown) => Promise.reject(await exitedOr(this.client, id, err)));
      // Exec processes are deleted after they exit (BuildKit never deletes them, §12.6); once the exit was
      // seen, in the background like a run's task.
      stack.defer("delete exec process", () => {
        if (handOver) return this.#retirements.retireExec(id, execId);
        return deleteExecProcess(this.client, id, execId);
      });
      if (signal.aborted) throw new CanceledError(`exec into ${id} was canceled before it started`, { cause: signal.reason });
      const io = await ioReady;
      const outcome = await runProcess({
        client: this.client,
        ref: { containerId: id, execId },
        io,
        command: meta.args[0] ?? "",
        logger: this.#logger,
        span,
        signal,
        resize: proc.resize,
        signals: proc.signals,
        tty: meta.tty,
        initialSize: meta.consoleSize,
        onStarted: (pid) => options.onStarted?.({ id, execId, pid }),
        startTurn: <T>(start: () => Promise<T>) => this.#shimTurns.run(id, start),
      }).catch(async (err: unknown) => Promise.reject(await exitedOr(this.client, id, err)));
      handOver = !this.#options.awaitCleanup && outcome.waitError === undefined;
      this.#result(id, outcome, meta, signal, {}, false);
    } finally {
      await stack.release();
      span.end();
    }
  }

  /** The process spec and rootfs to exec with, from our own run or from containerd's record of another's. */
  async #execTarget(id: string, signal: AbortSignal): Promise<{ process: OciProcess; rootfs: string }> {
    const state = this.#running.get(id);
    if (state) {
      await state.waitRunning(signal);
      return { process: state.spec!.process!, rootfs: state.rootfs! };
    }
    // Finished, its records on their way out: as if they were gone already.
    if (this.#retirements.has(id)) throw new NotFoundError(`container ${id} not found (its run has finished)`);
    let record;
    try {
      record = await this.client.containers.get(id, { signal });
    } catch (err) {
      if (err instanceof NotFoundError) throw new NotFoundError(`container ${id} not found`, { cause: err });
      throw err;
    }
    const rootfs = record.labels[LABEL.rootfs];
    if (!record.labels[LABEL.owner] || !rootfs || !record.spec) {
      throw new NotFoundError(`container ${id} not found (it exists in namespace ${this.namespace} but was not made by ctrexec)`);
    }
    for (;;) {
      let status;
      try {
        status = (await this.client.tasks.get({ containerId: id }, { signal })).status;
      } catch (err) {
        if (err instanceof NotFoundError) throw new ContainerExitedError(`container ${id} has stopped`, { cause: err });
        throw err;
      }
      if (status === "RUNNING") break;
      if (status !== "CREATED") throw new ContainerExitedError(`container ${id} has stopped`);
      await new Promise((r) => setTimeout(r, 100));
      if (signal.aborted) throw new CanceledError(`exec into ${id} was canceled`, { cause: signal.reason });
    }
    const spec = JSON.parse(Buffer.from(record.spec.value).toString("utf8")) as Spec;
    if (!spec.process) throw new NotFoundError(`container ${id} has no process spec`);
    return { process: spec.process, rootfs };
  }

  /**
   * Resolves when the containerd records of every finished run are deleted (see `awaitCleanup`; shims kept for
   * reuse are let go first) and their warm shims are back in the pool: for a caller that wants containerd to
   * show none of them, e.g. before it lists containers itself. With `keepReusableShims`, the shims kept for
   * reuse stay, and with them their founders' stopped containers: every other deletion is waited for.
   */
  async settled(options: { keepReusableShims?: boolean } = {}): Promise<void> {
    if (!options.keepReusableShims) this.#shimReuse?.flush();
    await this.#retirements.settledAll({ exceptGated: options.keepReusableShims === true });
    await this.#shimPool?.settled();
  }

  /** Removes what runs of dead ctrexec processes left in this namespace (see prune.ts); never live runs. */
  async prune(): Promise<string[]> {
    return prune({
      client: this.client,
      stateDir: this.root,
      fifoRoot: this.fifoRoot,
      logger: this.#logger,
      runtime: this.#options.runtime ?? DEFAULT_RUNTIME,
    });
  }


  /**
   * Cancels runs and execs in progress (SIGKILL), waits for their cleanup, and releases the event stream,
   * network providers and (if the executor made it) the client. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort(new CanceledError("the executor is closing"));
      await Promise.allSettled([...this.#inflight]);
      this.#shimReuse?.close();
      await this.#retirements.drain();
      await this.#shimGroup?.close();
      await this.#shimPool?.close();
      await this.#oom.close();
      const bridge = await this.#bridge?.catch(() => undefined);
      for (const p of new Set([...this.#networks.values(), ...(bridge ? [bridge] : [])])) {
        await p.close().catch((err: unknown) => this.#logger.warn("closing a network provider failed", { error: err }));
      }
      if (this.#ownsClient) await this.client.close();
    })();
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
