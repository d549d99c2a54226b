import { LABEL } from "../labels.js";
import { uniqueShimGroupName } from "./group-name.js";
import { NO_LABELS, NO_RETIREMENT, OWN_SHIM } from "./none.js";
import type { LeaseRequest, ShimLease, ShimPolicy } from "./policy.js";

export interface ReuseOptions {
  /** A shim no run has used for this long is let go. */
  idleMs: number;
  /** A shim is not lent again once its founder exited this long ago (its stopped container goes then). */
  maxAgeMs?: number | undefined;
}

const REUSE_MAX_AGE_MS = 120_000;
const FOUNDER_LABELS = Object.freeze({ [LABEL.shimFounder]: "true" });

interface Group {
  readonly name: string;
  /** When the founder exited. */
  readonly bornAt: number;
  /** The founder's task, kept (stopped) so that its shim lives on; undefined once its deletion may start. */
  releaseFounder: (() => void) | undefined;
  /** A borrower runs in it, or its task is being deleted. */
  lent: boolean;
  letGo: boolean;
  timer: NodeJS.Timeout | undefined;
}

/**
 * The next run reuses a finished run's shim (`shims: "reuse"`, the default). Every run's spec names a shim
 * group. A run that started a new shim (its group's founder, marked by a label for prune and `ps`) keeps its
 * task, stopped, when its process exits, instead of deleting it: the runc v2 shim lives as long as it hosts a
 * task, so the next run that names the group skips the shim start. Later runs in the group (borrowers) are
 * deleted as usual once they exit, and the founder, which the shim has hosted from the start, is deleted last:
 * when the group has been idle for `idleMs`, its founder exited `maxAgeMs` ago, a borrower failed, or at
 * `flush()`.
 *
 * A group is lent to one run at a time, so a shim never hosts two live runs: its crash ends one run, as
 * without reuse. It is free again once the borrower's task is deleted, not at its exit: had the shim died
 * meanwhile, the borrower ran in a fresh shim of the group, which exits with the borrower's deletion, and must
 * not be shutting down while the next run's task is created in it.
 *
 * Unlike warm shims (warm.ts) nothing is started ahead and nothing extra runs: what stays between runs is the
 * founder's stopped task and its shim. A process that exits without `close()` lets them go from `beforeExit`;
 * one that is killed leaves them to `prune`, as it leaves its runs in progress.
 *
 * Pure policy: the executor does the deleting, and passes its deletions through `retire`'s gate.
 */
export function reuseShims(options: ReuseOptions): ShimPolicy {
  return new ShimReuse(options);
}

class ShimReuse implements ShimPolicy {
  readonly #idleMs: number;
  readonly #maxAgeMs: number;
  readonly #prefix = `${uniqueShimGroupName()}-r`;
  /** Groups free to lend, the most recently used last. */
  readonly #free: Group[] = [];
  /** Groups whose founder is still kept, by the founder's id. */
  readonly #founders = new Map<string, Group>();
  #next = 0;
  #closed = false;

  constructor(options: ReuseOptions) {
    this.#idleMs = options.idleMs;
    this.#maxAgeMs = options.maxAgeMs ?? REUSE_MAX_AGE_MS;
  }

  /**
   * A free group, or a new one that the run founds. A run whose id the caller chose founds none, so that no kept
   * record blocks its id: without a free group it starts a shim of its own. After close, nothing is shared.
   */
  lease(request: LeaseRequest): ShimLease {
    if (this.#closed) return OWN_SHIM;
    // The most recently used first, so that groups beyond what the runs need go idle and are let go.
    for (let g = this.#free.pop(); g; g = this.#free.pop()) {
      clearTimeout(g.timer);
      if (this.#aged(g)) {
        this.#letGo(g);
        continue;
      }
      g.lent = true;
      return this.#borrow(g);
    }
    return request.callerChoseId ? OWN_SHIM : this.#found(`${this.#prefix}${this.#next++}`);
  }

  /** Lets every kept shim go (those lent, once their run is done). New runs found new groups. */
  flush(): void {
    for (const g of [...this.#founders.values()]) this.#letGo(g);
  }

  /** Lets the shim founded by run `id` go, so that its records can be deleted (a new run with the same id). */
  release(id: string): void {
    const g = this.#founders.get(id);
    if (g) this.#letGo(g);
  }

  /** Nothing runs in the background here: the founders' deletions are the executor's. */
  settled(): Promise<void> {
    return Promise.resolve();
  }

  /** Lets every shim go, and keeps none from now on. */
  close(): Promise<void> {
    this.#closed = true;
    this.flush();
    return Promise.resolve();
  }

  #found(name: string): ShimLease {
    let ended = false;
    return {
      group: name,
      labels: FOUNDER_LABELS,
      retire: (id) => {
        if (ended || this.#closed) return NO_RETIREMENT;
        ended = true;
        const g: Group = { name, bornAt: Date.now(), releaseFounder: undefined, lent: false, letGo: false, timer: undefined };
        const gate = new Promise<void>((resolve) => {
          g.releaseFounder = () => {
            g.releaseFounder = undefined;
            this.#founders.delete(id);
            if (this.#founders.size === 0) exitHook.delete(this);
            resolve();
          };
        });
        this.#founders.set(id, g);
        exitHook.add(this);
        this.#park(g);
        return { gate, taskDone: () => {} };
      },
      // A founder that does not hand its task over keeps nothing: its shim goes with its task.
      end: () => {
        ended = true;
      },
    };
  }

  #borrow(g: Group): ShimLease {
    let ended = false;
    return {
      group: g.name,
      labels: NO_LABELS,
      retire: () => {
        if (ended) return NO_RETIREMENT;
        ended = true;
        // A task containerd would not delete may mean a shim in trouble: start afresh.
        const taskDone = (gone: boolean) => g.lent && this.#giveBack(g, !gone);
        return { gate: undefined, taskDone };
      },
      end: ({ shimAsked, taskGone }) => {
        if (ended) return;
        ended = true;
        // A run that failed in its shim (task creation, the wait) may have failed because of it, and one whose
        // task is still there would share the shim with the next run: start afresh.
        this.#giveBack(g, shimAsked || !taskGone);
      },
    };
  }

  /** A borrower is done with `g`: lend it again, or let it go (`suspect`: the shim may be at fault). */
  #giveBack(g: Group, suspect: boolean): void {
    g.lent = false;
    if (suspect || this.#closed || g.letGo || this.#aged(g)) this.#letGo(g);
    else this.#park(g);
  }

  #aged(g: Group): boolean {
    return Date.now() - g.bornAt >= this.#maxAgeMs;
  }

  #park(g: Group): void {
    this.#free.push(g);
    clearTimeout(g.timer);
    g.timer = setTimeout(() => this.#letGo(g), this.#idleMs).unref();
  }

  #letGo(g: Group): void {
    clearTimeout(g.timer);
    const i = this.#free.indexOf(g);
    if (i >= 0) this.#free.splice(i, 1);
    g.letGo = true;
    this.#maybeRelease(g);
  }

  /** The founder goes last: deleting it before a borrower would leave the shim without its bundle (its cwd). */
  #maybeRelease(g: Group): void {
    if (g.letGo && !g.lent) g.releaseFounder?.();
  }
}

/**
 * Reuse policies that keep founders. The idle timers do not hold the process open; when its event loop runs
 * dry, the founders are let go, and their deletion (RPCs in flight) holds it open until they are gone.
 */
const exitHook = new (class extends Set<ShimReuse> {
  readonly #onBeforeExit = () => {
    for (const r of [...this]) r.flush();
  };
  override add(r: ShimReuse): this {
    if (this.size === 0) process.on("beforeExit", this.#onBeforeExit);
    return super.add(r);
  }
  override delete(r: ShimReuse): boolean {
    const had = super.delete(r);
    if (had && this.size === 0) process.off("beforeExit", this.#onBeforeExit);
    return had;
  }
})();
