import { uniqueShimGroupName } from "./shim-group.js";

/** What a run gets: the shim group for its spec, and the calls that tell the relay how the run ended. */
export interface ReuseLease {
  /** Put in the run's spec as the runc v2 shim's group annotation. */
  readonly group: string;
  /** The run starts the group's shim, and keeps its stopped task for the next runs once it exits. */
  readonly founder: boolean;
  /**
   * The run's process exited and its task goes to be deleted in the background. The deletion must wait for
   * `gate` (undefined: start now), and call `taskDone` once the task deletion was tried (`gone`: it worked).
   */
  handOver(id: string): { gate: Promise<void> | undefined; taskDone: (gone: boolean) => void };
  /**
   * The run ends without handing its task over (it never had one, or deleted it itself). `shimAsked`: it got
   * as far as Tasks.Create, so what went wrong may be the shim's. `taskGone`: its task is known deleted (or
   * was never made); a shim that may still host it is never lent again. Idempotent.
   */
  end(shimAsked: boolean, taskGone: boolean): void;
}

export interface ShimReuseOptions {
  /** A shim no run has used for this long is let go. */
  idleMs?: number | undefined;
  /** A shim is not lent again once its founder exited this long ago (its stopped container goes then). */
  maxAgeMs?: number | undefined;
}

export const REUSE_IDLE_MS = 10_000;
const REUSE_MAX_AGE_MS = 120_000;

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
 * The next run reuses a finished run's shim (the default for long-lived executors). Every run's spec names a
 * shim group. A run that started a new shim (its group's founder) keeps its task, stopped, when its process
 * exits, instead of deleting it: the runc v2 shim lives as long as it hosts a task, so the next run that names
 * the group skips the shim start. Later runs in the group (borrowers) are deleted as usual once they exit,
 * and the founder, which the shim has hosted from the start, is deleted last: when the group has been idle for
 * `idleMs`, its founder exited `maxAgeMs` ago, a borrower failed, or at `flush()`.
 *
 * A group is lent to one run at a time, so a shim never hosts two live runs: its crash ends one run, as
 * without reuse. It is free again once the borrower's task is deleted, not at its exit: had the shim died
 * meanwhile, the borrower ran in a fresh shim of the group, which exits with the borrower's deletion, and must
 * not be shutting down while the next run's task is created in it.
 *
 * Unlike warm shims (`shim-pool.ts`) nothing is started ahead and nothing extra runs: what stays between runs
 * is the founder's stopped task and its shim. A process that exits without `close()` lets them go from
 * `beforeExit`; one that is killed leaves them to `prune`, as it leaves its runs in progress.
 *
 * Pure policy: the executor does the deleting, and passes its deletions through `handOver`'s gate.
 */
export class ShimReuse {
  readonly #idleMs: number;
  readonly #maxAgeMs: number;
  readonly #prefix = `${uniqueShimGroupName()}-r`;
  /** Groups free to lend, the most recently used last. */
  readonly #free: Group[] = [];
  /** Groups whose founder is still kept, by the founder's id. */
  readonly #founders = new Map<string, Group>();
  #next = 0;
  #closed = false;

  constructor(options: ShimReuseOptions = {}) {
    this.#idleMs = options.idleMs ?? REUSE_IDLE_MS;
    this.#maxAgeMs = options.maxAgeMs ?? REUSE_MAX_AGE_MS;
  }

  /** Shims kept for reuse (each with its founder's stopped task). */
  get size(): number {
    return this.#founders.size;
  }

  /**
   * A lease for one run: a free group, or a new one that the run founds. A run whose id the caller chose does
   * not found one (`found` false: no lease without a free group), so that no kept record blocks its id.
   */
  take(found = true): ReuseLease | undefined {
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
    return found ? this.#found(`${this.#prefix}${this.#next++}`) : undefined;
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

  /** Lets every shim go, and keeps none from now on. */
  close(): void {
    this.#closed = true;
    this.flush();
  }

  #found(name: string): ReuseLease {
    return {
      group: name,
      founder: true,
      handOver: (id) => {
        if (this.#closed) return { gate: undefined, taskDone: () => {} };
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
      end: () => {},
    };
  }

  #borrow(g: Group): ReuseLease {
    let ended = false;
    return {
      group: g.name,
      founder: false,
      handOver: () => {
        if (ended) return { gate: undefined, taskDone: () => {} };
        ended = true;
        // A task containerd would not delete may mean a shim in trouble: start afresh.
        const taskDone = (gone: boolean) => g.lent && this.#giveBack(g, !gone);
        return { gate: undefined, taskDone };
      },
      end: (shimAsked, taskGone) => {
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
 * Reuse instances that keep founders. The idle timers do not hold the process open; when its event loop runs
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
