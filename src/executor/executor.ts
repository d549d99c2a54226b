import { setMaxListeners } from "node:events";
import { ContainerdClient } from "../containerd/client.js";
import { TaskCreator } from "../containerd/task-creator.js";
import { AlreadyExistsError, CanceledError, PruneIncompleteError } from "../errors.js";
import { detectHostFeatures } from "../oci/host-features.js";
import { ensureDefaultRootfs } from "../rootfs/default-rootfs.js";
import { KeyedLimit } from "../util/keyed-limit.js";
import { type Span, startSpan } from "../util/tracing.js";
import { newContainerId, validateContainerId } from "./container-id.js";
import type { ExecutorContext } from "./context.js";
import { EnvFiles } from "./env-files.js";
import { runExec } from "./exec/exec.js";
import { Networks } from "./networks.js";
import { OomWatch } from "./oom-watch.js";
import { type ExecutorOptions, normalizeOptions, type ResolvedOptions } from "./options.js";
import { prune } from "./prune.js";
import { Retirements } from "./retire.js";
import { withRootlessDefaults } from "./rootless-mode.js";
import { createContainer, type TaskState } from "./run/container.js";
import { RunDisposal } from "./run/disposal.js";
import { checkRunRequest, prepareRun, throwIfCanceled } from "./run/prepare.js";
import { runProcess } from "./run/process.js";
import { runResult } from "./run/result.js";
import { fifoDir } from "./run-dirs.js";
import { RunState } from "./running.js";
import { createShimPolicy } from "./shims/index.js";
import { chooseShimLauncher } from "./shims/launcher.js";
import { openStateDirs } from "./state-dirs.js";
import type { ExecOptions, ProcessInfo, RunRequest, RunResult } from "./types.js";
import { sampleUsage } from "./usage.js";

export { DEFAULT_FIFO_ROOT, DEFAULT_STATE_DIR, type ExecutorOptions, type ShimsOption } from "./options.js";

/** Exec Starts in flight per container's shim (ExecutorContext.shimTurns): below the shim's stall point (~20), above what measurably helps (docs/performance.md). */
const SHIM_CALLS_AT_ONCE = 8;

/**
 * Runs processes in containers through containerd with BuildKit's semantics (reference §2–§4), fixed where
 * BuildKit is weak (docs/differences-from-buildkit.md). A run goes through its steps in order, each in its own
 * module (docs/architecture.md): prepare (run/prepare) → create (run/container) → start and wait (run/process)
 * → result (run/result) → release, then retire in the background (run/disposal, retire).
 */
export class ContainerdExecutor implements AsyncDisposable {
  readonly client: ContainerdClient;
  /** The state dir, by its real path. */
  readonly root: string;
  readonly fifoRoot: string;
  readonly #ctx: ExecutorContext;
  readonly #running = new Map<string, RunState>();
  readonly #inflight = new Set<Promise<unknown>>();
  readonly #closing = new AbortController();
  #closed: Promise<void> | undefined;

  private constructor(options: ResolvedOptions, client: ContainerdClient, root: string, containerdVersion: string) {
    this.client = client;
    this.root = root;
    this.fifoRoot = options.fifoRoot;
    const logger = options.logger;
    const tasks = new TaskCreator(client, chooseShimLauncher(options.shimLauncher, options.runtime, containerdVersion), logger);
    this.#ctx = {
      client,
      options,
      root,
      logger,
      host: options.hostFeatures ?? detectHostFeatures(),
      env: new EnvFiles({ dir: root, dns: options.dns, logger }),
      networks: new Networks(options, root, client.namespace),
      retirements: new Retirements(client, logger, this.#closing.signal),
      tasks,
      shims: createShimPolicy(options.shims, { client, tasks, rootfs: () => ensureDefaultRootfs(root), runtime: options.runtime, logger }),
      shimTurns: new KeyedLimit(SHIM_CALLS_AT_ONCE),
      fifos: fifoDir(options.fifoRoot, client.namespace),
      oom: new OomWatch(client, logger),
    };
    // Every run and exec listens on the executor's close signal: many at once is normal, not a leak.
    setMaxListeners(0, this.#closing.signal);
  }

  /** Connects (fails with UnavailableError if containerd does not answer) and prepares the state dirs. */
  static async create(options: ExecutorOptions = {}): Promise<ContainerdExecutor> {
    const resolved = normalizeOptions(withRootlessDefaults(options));
    const client = resolved.client ?? new ContainerdClient({ address: resolved.address, namespace: resolved.namespace });
    let executor: ContainerdExecutor;
    try {
      const { version } = await client.version();
      const root = await openStateDirs(resolved.root, resolved.fifoRoot, client.namespace);
      executor = new ContainerdExecutor(resolved, client, root, version);
    } catch (err) {
      if (!resolved.client) await client.close();
      throw err;
    }
    if (resolved.pruneOnStart) await executor.#pruneOnStart();
    return executor;
  }

  async #pruneOnStart(): Promise<void> {
    const logger = this.#ctx.logger;
    try {
      for (const line of await this.prune()) logger.info(`pruned ${line}`);
    } catch (err) {
      // What a dead run left and prune could not remove is no reason not to run: it is said, and retried by the
      // next prune.
      if (!(err instanceof PruneIncompleteError)) {
        await this.close();
        throw err;
      }
      for (const line of err.removed) logger.info(`pruned ${line}`);
      logger.warn(err.message, { failures: err.failures.length });
    }
  }

  get namespace(): string {
    return this.client.namespace;
  }

  /** The ids of the runs of this executor that are in progress. */
  get runs(): string[] {
    return [...this.#running.keys()];
  }

  /** What `network: "default"` means for this executor (see ExecutorOptions.defaultNetwork). */
  defaultNetwork(): Promise<string> {
    return this.#ctx.networks.defaultMode();
  }

  #track<T>(p: Promise<T>): Promise<T> {
    this.#inflight.add(p);
    void p.then(
      () => this.#inflight.delete(p),
      () => this.#inflight.delete(p),
    );
    return p;
  }

  #signal(caller: AbortSignal | undefined): AbortSignal {
    return caller ? AbortSignal.any([caller, this.#closing.signal]) : this.#closing.signal;
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
    const span = startSpan(this.#ctx.options.tracer, "ctrexec.run", { "container.id": id });
    const signal = this.#signal(req.signal);
    const disposal = new RunDisposal(this.#ctx.logger);
    let failure: unknown;
    let result: RunResult;
    try {
      // The same id again right after a run: let the earlier run's records go first.
      if (this.#ctx.retirements.has(id)) {
        this.#ctx.shims.release(id);
        // A kept founder goes only after its shim's borrower: the caller's signal ends the wait.
        await this.#ctx.retirements.settled(id, signal);
      }
      result = await this.#run(id, req, state, disposal, span, signal);
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      // A release learns whether the run succeeded (a commit keeps only a successful step's changes).
      await disposal.release({ succeeded: failure === undefined });
      this.#running.delete(id);
      state.finish(failure);
      span.end();
    }
    // Only a failed delete of the task or container (or of a commit, which keeps the result) changes a
    // successful result, as in BuildKit; every other release failure was logged.
    if (disposal.failedRun) throw disposal.failedRun;
    return result;
  }

  /** The run's steps in order; each registers its releases on `disposal` as it acquires. */
  async #run(id: string, req: RunRequest, state: RunState, disposal: RunDisposal, span: Span, signal: AbortSignal): Promise<RunResult> {
    const ctx = this.#ctx;
    const meta = req.process.meta;
    throwIfCanceled(id, signal);
    const base = checkRunRequest(ctx, id, req);
    const task: TaskState = { gone: true, shimAsked: false };
    const prepared = await prepareRun(ctx, id, req, base, disposal, task, signal, (rootfs) => {
      state.rootfs = rootfs;
    });
    span.addEvent("Environment prepared");

    // A caller's own id may be used again at once, by another executor too: such a run never keeps its record.
    const lease = ctx.shims.lease({ callerChoseId: req.id !== undefined });
    disposal.defer("end the shim lease", {
      now: () => lease.end({ shimAsked: task.shimAsked && !signal.aborted, taskGone: task.gone }),
      background: undefined, // the task's retirement hands the lease over
    });
    const { spec, io } = await createContainer(ctx, id, req, base, prepared, lease, disposal, task, span, signal);
    state.spec = spec;

    let started = false;
    const outcome = await runProcess({
      client: ctx.client,
      ref: { containerId: id },
      io,
      command: spec.process!.args[0] ?? "",
      logger: ctx.logger,
      span,
      signal,
      resize: req.process.resize,
      signals: req.process.signals,
      tty: meta.tty,
      initialSize: meta.consoleSize,
      reconnectBoundMs: ctx.options.reconnectBoundMs,
      onStarted: (pid) => {
        if (started) return;
        started = true;
        state.markStarted();
        span.addEvent("Container started");
        req.onStarted?.({ id, pid });
      },
    });

    // An exit was seen, so the container's mount namespace is gone with its last process.
    if (!ctx.options.awaitCleanup && outcome.waitError === undefined) disposal.retireInBackground();
    const usage = spec.linux?.cgroupsPath ? sampleUsage(spec.linux.cgroupsPath) : {};
    const oomKilled = ctx.oom.take(id) || (usage.oomKills ?? 0) > 0;
    delete usage.oomKills;
    return runResult(id, outcome, meta, signal, usage, oomKilled);
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

  async #exec(id: string, process: ProcessInfo, options: ExecOptions): Promise<void> {
    if (this.#closed) throw new CanceledError("the executor is closed");
    await runExec(this.#ctx, this.#running, id, process, options, this.#signal(options.signal));
  }

  /**
   * Resolves when the containerd records of every finished run are deleted (see `awaitCleanup`; shims kept for
   * reuse are let go first) and their warm shims are back in the pool: for a caller that wants containerd to
   * show none of them, e.g. before it lists containers itself. With `keepReusableShims`, the shims kept for
   * reuse stay, and with them their founders' stopped containers: every other deletion is waited for.
   */
  async settled(options: { keepReusableShims?: boolean } = {}): Promise<void> {
    if (!options.keepReusableShims) this.#ctx.shims.flush();
    await this.#ctx.retirements.settledAll({ exceptGated: options.keepReusableShims === true });
    await this.#ctx.shims.settled();
  }

  /** Removes what runs of dead ctrexec processes left in this namespace (see prune.ts); never live runs. */
  prune(): Promise<string[]> {
    const { options, logger } = this.#ctx;
    return prune({ client: this.client, stateDir: this.root, fifoRoot: this.fifoRoot, logger, runtime: options.runtime });
  }

  /**
   * Cancels runs and execs in progress (SIGKILL), waits for their cleanup, and releases the shims, the event
   * stream, network providers and (if the executor made it) the client. Idempotent.
   */
  close(): Promise<void> {
    this.#closed ??= (async () => {
      this.#closing.abort(new CanceledError("the executor is closing"));
      await Promise.allSettled([...this.#inflight]);
      const { shims, retirements, oom, networks } = this.#ctx;
      // Kept shims are let go first, so that their founders' deletions are among what drain() waits for.
      shims.flush();
      await retirements.drain();
      await shims.close();
      await oom.close();
      await networks.close();
      if (!this.#ctx.options.client) await this.client.close();
    })();
    return this.#closed;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
