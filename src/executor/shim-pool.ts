import type { ContainerdClient } from "../containerd/client.js";
import type { TaskCreator } from "../containerd/shim-launcher.js";
import type { Logger } from "../util/logger.js";
import { startAnchor, stopAnchor, uniqueShimGroupName } from "./shim-group.js";

interface WarmShim {
  group: string;
  anchor: string;
}

/** What a run gets from the pool: a warm shim's group, or none (the run starts its own shim). */
export interface ShimLease {
  group: string | undefined;
  /**
   * Call once the run is over and its task's deletion was tried: `taskGone` says whether the task is known
   * deleted (or was never made). A shim that may still host the run's task is never lent again. Idempotent.
   */
  done(taskGone: boolean): void;
}

export interface ShimPoolOptions {
  client: ContainerdClient;
  tasks: TaskCreator;
  /** How many warm shims to keep (idle plus lent), or "auto": sized to the runs in progress, none when idle. */
  size: number | "auto";
  /** The read-only rootfs of the anchors (the default rootfs). */
  rootfs: () => Promise<string>;
  runtime: string;
  logger: Logger;
  /** "auto": how long after the last run ended the pool lets its shims go. */
  idleMs?: number | undefined;
}

/** "auto" keeps twice the runs in progress (a shim stays busy until its run's task is deleted), 2 to 16. */
const AUTO_MIN = 2;
const AUTO_MAX = 16;
const AUTO_IDLE_MS = 30_000;
/** After an anchor failed to start, runs go without warm shims this long before the pool tries again. */
const RETRY_AFTER_FAILURE_MS = 10_000;

/**
 * Shims started ahead of the runs that will use them, each lent to one run at a time. A run whose spec names a
 * warm shim's group skips the shim start in Tasks.Create (~5 ms, and ~8 ms of CPU). Unlike one shared group,
 * a shim never hosts two runs at once: its crash takes down one run, as without the pool, and concurrent runs
 * do not queue on one shim's lock. A run never waits for the pool: without an idle warm shim it starts its own,
 * while the pool fills up in the background, one anchor at a time.
 *
 * "auto" starts nothing for an executor's first run (a one-shot caller pays nothing), then keeps twice the
 * peak number of runs in progress, and lets every shim go once no run has started for `idleMs`.
 *
 * A warm shim that died is harmless to the run that gets it (containerd starts a fresh shim for the group);
 * it is noticed when the run gives it back, and replaced.
 */
export class ShimPool {
  readonly #o: ShimPoolOptions;
  readonly #auto: boolean;
  readonly #idle: WarmShim[] = [];
  readonly #lent = new Set<WarmShim>();
  readonly #prefix = uniqueShimGroupName();
  #next = 0;
  /** How many warm shims to have: the fixed size, or what "auto" wants now. */
  #target: number;
  /** Leases out (runs in progress, or whose task is still being deleted). */
  #active = 0;
  /** "auto": runs since the pool was last idle. */
  #runs = 0;
  #idleTimer: NodeJS.Timeout | undefined;
  #warming: Promise<void> | undefined;
  /** When an anchor last failed to start (0: never). */
  #failedAt = 0;
  /** Health checks of returned shims, and anchors being stopped, in flight. */
  readonly #checks = new Set<Promise<boolean>>();
  readonly #stopping = new Set<Promise<void>>();
  #closed = false;

  constructor(options: ShimPoolOptions) {
    this.#o = options;
    this.#auto = options.size === "auto";
    this.#target = options.size === "auto" ? 0 : options.size;
  }

  /** How many warm shims the pool holds or is starting, lent ones included. */
  get size(): number {
    return this.#idle.length + this.#lent.size + this.#checks.size;
  }

  /** A lease for one run: an idle warm shim, or none (the run starts its own shim). Tops the pool up. */
  take(): ShimLease {
    if (this.#closed) return { group: undefined, done: () => {} };
    this.#active++;
    if (this.#auto) this.#grow();
    // Oldest first: every warm shim gets lent, so a dead one is noticed (at its return) and replaced.
    const shim = this.#idle.shift();
    if (shim) this.#lent.add(shim);
    this.#fill();
    let returned = false;
    return {
      group: shim?.group,
      done: (taskGone) => {
        if (returned) return;
        returned = true;
        this.#active--;
        if (shim && taskGone) this.#giveBack(shim);
        else if (shim) this.#retire(shim);
        if (this.#auto && this.#active === 0 && !this.#closed) {
          clearTimeout(this.#idleTimer);
          this.#idleTimer = setTimeout(() => this.#letGo(), this.#o.idleMs ?? AUTO_IDLE_MS).unref();
        }
      },
    };
  }

  #grow(): void {
    clearTimeout(this.#idleTimer);
    this.#idleTimer = undefined;
    // The first run since the pool was idle gets nothing ahead: a caller that runs once never pays for shims.
    if (++this.#runs < 2) return;
    this.#target = Math.max(this.#target, Math.min(AUTO_MAX, Math.max(AUTO_MIN, 2 * this.#active)));
  }

  /** "auto" after `idleMs` without runs: every warm shim goes. The next runs grow the pool again. */
  #letGo(): void {
    this.#idleTimer = undefined;
    if (this.#active > 0 || this.#closed) return;
    this.#target = 0;
    this.#runs = 0;
    for (const shim of this.#idle.splice(0)) this.#stop(shim);
  }

  #stop(shim: WarmShim): void {
    const stop = stopAnchor(this.#o.client, shim.anchor, this.#o.logger).finally(() => this.#stopping.delete(stop));
    this.#stopping.add(stop);
  }

  /**
   * A shim whose run's task was not deleted (kill timeout, containerd away) may still run that container: the
   * next run would share its shim with it. Its anchor goes (the executor keeps retrying the run's task, and
   * prune finishes both if this process dies), and a fresh shim takes its place.
   */
  #retire(shim: WarmShim): void {
    this.#lent.delete(shim);
    this.#o.logger.warn("a warm shim's run left its task behind; the shim is not lent again", { anchor: shim.anchor });
    const stop = stopAnchor(this.#o.client, shim.anchor, this.#o.logger).finally(() => {
      this.#stopping.delete(stop);
      this.#fill();
    });
    this.#stopping.add(stop);
  }

  #giveBack(shim: WarmShim): void {
    this.#lent.delete(shim);
    const check = (async (): Promise<boolean> => {
      // Still warm? An anchor whose task is not running means its shim died (or was killed): replace it.
      const status = await this.#o.client.tasks.get({ containerId: shim.anchor }, { timeoutMs: 10_000 }).then(
        (t) => t.status,
        () => "UNKNOWN",
      );
      // This check still counts in `size`: keep the shim only if the pool is not over its target without it.
      if (status === "RUNNING" && !this.#closed && this.size - 1 < this.#target) {
        this.#idle.push(shim);
        return false;
      }
      if (status !== "RUNNING") this.#o.logger.warn("a warm shim is gone; replacing it", { anchor: shim.anchor });
      await stopAnchor(this.#o.client, shim.anchor, this.#o.logger);
      return status !== "RUNNING";
    })();
    this.#checks.add(check);
    void check.then((replace) => {
      this.#checks.delete(check);
      if (replace) this.#fill();
    });
  }

  /** Starts anchors one after another until the pool has its target of shims. */
  #short(): boolean {
    return !this.#closed && this.size < this.#target;
  }

  #fill(): void {
    if (this.#warming || !this.#short()) return;
    // A failure that would repeat (no rootfs for the anchors, a broken runtime) is not retried on every run.
    if (this.#failedAt && Date.now() - this.#failedAt < RETRY_AFTER_FAILURE_MS) return;
    this.#warming = (async () => {
      while (this.#short()) {
        const group = `${this.#prefix}-${this.#next++}`;
        try {
          const anchor = await startAnchor(this.#o.client, this.#o.tasks, group, await this.#o.rootfs(), this.#o.runtime, this.#o.logger);
          if (this.#closed || this.size >= this.#target) {
            // Closed, or "auto" let go of the pool while this one was starting.
            await stopAnchor(this.#o.client, anchor, this.#o.logger);
            break;
          }
          this.#idle.push({ group, anchor });
        } catch (err) {
          // Runs go on with shims of their own; a take() after RETRY_AFTER_FAILURE_MS tries again.
          this.#failedAt = Date.now();
          this.#o.logger.warn("could not start a warm shim; runs start their own for now", { error: err });
          break;
        }
      }
    })().finally(() => {
      // Runs after the assignment above even when the loop had nothing to do.
      this.#warming = undefined;
    });
  }

  /** Resolves when every returned shim is back in the pool (or replaced, the replacement started) or stopped. */
  async settled(): Promise<void> {
    while (this.#checks.size > 0 || this.#stopping.size > 0) await Promise.allSettled([...this.#checks, ...this.#stopping]);
  }

  /** Stops every anchor, idle or lent (a lent shim keeps running its run's task until that is deleted). */
  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#idleTimer);
    await this.#warming;
    await this.settled();
    const all = [...this.#idle.splice(0), ...this.#lent];
    this.#lent.clear();
    await Promise.all(all.map((s) => stopAnchor(this.#o.client, s.anchor, this.#o.logger)));
  }
}
