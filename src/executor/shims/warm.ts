import type { ContainerdClient } from "../../containerd/client.js";
import type { TaskCreator } from "../../containerd/task-creator.js";
import type { Logger } from "../../util/logger.js";
import { startAnchor, stopAnchor } from "./anchor.js";
import { uniqueShimGroupName } from "./group-name.js";
import { NO_LABELS, NO_RETIREMENT, OWN_SHIM } from "./none.js";
import type { ShimLease, ShimPolicy } from "./policy.js";

interface WarmShim {
  group: string;
  anchor: string;
}

export interface WarmOptions {
  client: ContainerdClient;
  tasks: TaskCreator;
  /** How many warm shims to keep (idle plus lent), or "auto": sized to the runs in progress, none when idle. */
  size: number | "auto";
  /** The read-only rootfs of the anchors (the default rootfs). */
  rootfs: () => Promise<string>;
  runtime: string;
  logger: Logger;
  /** "auto": how long after the last run ended the pool lets its shims go. */
  idleMs: number;
}

/** "auto" keeps twice the runs in progress (a shim stays busy until its run's task is deleted), 2 to 16. */
const AUTO_MIN = 2;
const AUTO_MAX = 16;
/** After an anchor failed to start, runs go without warm shims this long before the pool tries again. */
const RETRY_AFTER_FAILURE_MS = 10_000;

/**
 * Shims started ahead of the runs that will use them (`shims: { warm: n | "auto" }`), each lent to one run at a
 * time. A run whose spec names a warm shim's group skips the shim start in Tasks.Create. A shim never hosts two
 * runs at once: its crash takes down one run, as without the pool, and concurrent runs do not queue on one
 * shim's lock. A run never waits for the pool: without an idle warm shim it starts its own, while the pool
 * fills up in the background, one anchor (anchor.ts) at a time.
 *
 * "auto" starts nothing for an executor's first run (a one-shot caller pays nothing), then keeps twice the
 * peak number of runs in progress, and lets every shim go once no run has started for `idleMs`.
 *
 * A warm shim that died is harmless to the run that gets it (containerd starts a fresh shim for the group);
 * it is noticed when the run gives it back, and replaced.
 */
export function warmShims(options: WarmOptions): ShimPolicy {
  return new ShimPool(options);
}

class ShimPool implements ShimPolicy {
  readonly #o: WarmOptions;
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
  readonly #checks = new Set<Promise<void>>();
  readonly #stopping = new Set<Promise<void>>();
  #closed = false;

  constructor(options: WarmOptions) {
    this.#o = options;
    this.#auto = options.size === "auto";
    this.#target = options.size === "auto" ? 0 : options.size;
  }

  /** The warm shims the pool holds: idle, lent, and back from a run and being checked. */
  get #size(): number {
    return this.#idle.length + this.#lent.size + this.#checks.size;
  }

  /** An idle warm shim, or none (the run starts its own shim). Tops the pool up. */
  lease(): ShimLease {
    if (this.#closed) return OWN_SHIM;
    this.#active++;
    if (this.#auto) this.#grow();
    // Oldest first: every warm shim gets lent, so a dead one is noticed (at its return) and replaced.
    const shim = this.#idle.shift();
    if (shim) this.#lent.add(shim);
    this.#fill();
    let ended = false;
    /** The run is over and its task's deletion was tried: `taskGone` says whether the task is known deleted. */
    const done = (taskGone: boolean) => {
      this.#active--;
      // Closed: close() stops the anchor of every shim still lent, or has stopped it.
      if (shim && !this.#closed) {
        if (taskGone) this.#giveBack(shim);
        else this.#retire(shim);
      }
      if (this.#auto && this.#active === 0 && !this.#closed) {
        clearTimeout(this.#idleTimer);
        this.#idleTimer = setTimeout(() => this.#letGo(), this.#o.idleMs).unref();
      }
    };
    return {
      group: shim?.group,
      labels: NO_LABELS,
      retire: () => {
        if (ended) return NO_RETIREMENT;
        ended = true;
        let returned = false;
        return {
          gate: undefined,
          taskDone: (gone) => {
            if (returned) return;
            returned = true;
            done(gone);
          },
        };
      },
      end: ({ taskGone }) => {
        if (ended) return;
        ended = true;
        done(taskGone);
      },
    };
  }

  /** Nothing is kept under a run's id. */
  release(): void {}

  /** Nothing is kept for reuse: warm shims stay until `close()` (or "auto"'s idle time). */
  flush(): void {}

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

  /** Stops `shim`'s anchor in the background (settled() waits for it), then calls `then`. */
  #stop(shim: WarmShim, then?: () => void): void {
    const stop = stopAnchor(this.#o.client, shim.anchor, this.#o.logger).finally(() => {
      this.#stopping.delete(stop);
      then?.();
    });
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
    this.#stop(shim, () => this.#fill());
  }

  #giveBack(shim: WarmShim): void {
    this.#lent.delete(shim);
    const check: Promise<void> = this.#o.client.tasks
      .get({ containerId: shim.anchor }, { timeoutMs: 10_000 })
      .then(
        (t) => t.status,
        () => "UNKNOWN",
      )
      .then((status) => {
        // Out of `size` in the same turn as the shim goes back into it (or its stop begins): checks that end
        // together must not count each other, or the pool would think itself over its target and stop a shim.
        this.#checks.delete(check);
        // Still warm? An anchor whose task is not running means its shim died (or was killed): replace it.
        if (status === "RUNNING" && !this.#closed && this.#size < this.#target) {
          this.#idle.push(shim);
        } else if (status === "RUNNING") {
          this.#stop(shim);
        } else {
          this.#o.logger.warn("a warm shim is gone; replacing it", { anchor: shim.anchor });
          this.#stop(shim, () => this.#fill());
        }
      });
    this.#checks.add(check);
  }

  /** Starts anchors one after another until the pool has its target of shims. */
  #short(): boolean {
    return !this.#closed && this.#size < this.#target;
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
          if (this.#closed || this.#size >= this.#target) {
            // Closed, or "auto" let go of the pool while this one was starting.
            await stopAnchor(this.#o.client, anchor, this.#o.logger);
            break;
          }
          this.#idle.push({ group, anchor });
        } catch (err) {
          // Runs go on with shims of their own; a lease() after RETRY_AFTER_FAILURE_MS tries again.
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

  /**
   * Resolves when the pool is still: every returned shim back among the idle ones or stopped, and the anchors
   * it was starting (to fill up, or in place of a dead or retired shim) started. Then the next run gets an idle
   * shim if the pool holds one: what a caller that counts anchors in containerd sees is what the pool lends
   * (an anchor's task shows RUNNING a moment before the pool knows it started).
   */
  async settled(): Promise<void> {
    while (this.#checks.size > 0 || this.#stopping.size > 0 || this.#warming) {
      await Promise.allSettled([...this.#checks, ...this.#stopping, this.#warming]);
    }
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
