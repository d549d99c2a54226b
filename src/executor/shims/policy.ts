/**
 * How runs share shims. The executor asks its policy for one lease per run, puts the lease's group in the run's
 * spec and, once the run is over, tells the lease how it ended, in exactly one of two ways:
 * - `retire(id)`: the process's exit was seen and the task goes to be deleted in the background (run/disposal);
 *   the deletion waits for `gate` and reports through `taskDone` whether the task is gone;
 * - `end(...)`: the run ends without handing its task over (it failed before, or deleted its task itself).
 * Whatever the policy, a shim never hosts two live runs: its crash ends one run, as without sharing.
 */
export interface ShimLease {
  /** The runc v2 shim group annotation for the run's spec; undefined: the run starts a shim of its own. */
  readonly group: string | undefined;
  /** Labels for the run's container record (a reuse founder is marked, for prune). */
  readonly labels: Readonly<Record<string, string>>;
  retire(id: string): Retirement;
  /**
   * `shimAsked`: the run got as far as Tasks.Create and was not canceled, so what went wrong may be the shim's
   * (reuse then lets the shim go). `taskGone`: its task is known deleted (or was never made); a shim that may
   * still host it is never lent again. Idempotent, a no-op after retire; a retire after it keeps nothing.
   */
  end(outcome: { shimAsked: boolean; taskGone: boolean }): void;
}

export interface Retirement {
  /** The background task deletion starts once this resolves (undefined: at once). */
  gate: Promise<void> | undefined;
  /** Called once the background deletion of the task was tried: `gone` says whether it worked. */
  taskDone(gone: boolean): void;
}

export interface LeaseRequest {
  /** The caller chose the run's id: it may reuse it at once, from another executor too, so no record of it may be kept. */
  callerChoseId: boolean;
}

export interface ShimPolicy {
  /** One lease per run, taken once its environment is prepared; never waits. */
  lease(request: LeaseRequest): ShimLease;
  /** A new run wants id `id`: let go of anything the policy keeps under that id (a reuse founder). */
  release(id: string): void;
  /** Lets go of every shim kept for reuse (their founders' records are then deleted by the executor's retirements). */
  flush(): void;
  /**
   * Resolves when the policy's own background work is done: returned warm shims checked and back in the pool,
   * and the warm shims it was starting started (a run that follows gets one if the pool holds one).
   */
  settled(): Promise<void>;
  /** Lets every shim go; leases still out end as usual. Idempotent. */
  close(): Promise<void>;
}

/** The shim-sharing option, resolved: see ExecutorOptions.shims. */
export type ShimSharing = { kind: "off" } | { kind: "reuse"; idleMs: number } | { kind: "warm"; size: number | "auto"; idleMs: number };
