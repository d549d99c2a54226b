import { setTimeout as sleep } from "node:timers/promises";
import type { ContainerdClient } from "../containerd/client.js";
import { deleteContainerRecord, deleteExecProcess, deleteTask } from "../containerd/task-cleanup.js";
import { CanceledError, NotFoundError } from "../errors.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { LABEL } from "./labels.js";

const RETRY_EVERY_MS = 2000;

/**
 * Deletes the containerd side of finished runs (task, then container record) off the caller's path, and
 * keeps retrying the ones containerd would not let go of. A run hands its container over only once its
 * process has exited and everything the caller can see (streams, mounts, stubs) is released: what is left is
 * bookkeeping in containerd and runc (task state, cgroup, shim), which no caller needs to wait for. `drain()` waits for all of it.
 */
export class Retirements {
  readonly #client: ContainerdClient;
  readonly #logger: Logger;
  readonly #closing: AbortSignal;
  readonly #pending = new Map<string, Promise<void>>();
  /** Deletions waiting for their gate (a reused shim's founder). */
  readonly #gated = new Set<string>();
  readonly #orphans = new Set<string>();
  /**
   * What waits for an orphan's task to be gone (its run dir, which the container may still write into; its user
   * namespace range), in the order it was asked for.
   */
  readonly #afterOrphan = new Map<string, (() => Promise<void>)[]>();
  #afterCount = 0;
  #retrying: Promise<void> | undefined;

  constructor(client: ContainerdClient, logger: Logger, closing: AbortSignal) {
    this.#client = client;
    this.#logger = logger;
    this.#closing = closing;
  }

  /** Is `id` still being deleted in the background? */
  has(id: string): boolean {
    return this.#pending.has(id) || this.#orphans.has(id);
  }

  /**
   * Resolves once a background deletion of `id` (if any) has ended, successfully or not. A kept founder's
   * deletion may wait for its shim's borrower: `signal` ends the wait with a CanceledError (the deletion goes on).
   */
  async settled(id: string, signal?: AbortSignal): Promise<void> {
    const pending = this.#pending.get(id);
    if (!pending) return;
    await untilAborted(pending, signal, () => `the wait for the earlier run ${id} to be deleted was canceled`);
  }

  /** Resolves once every background deletion started so far has ended (`exceptGated`: not waiting for a gate). */
  async settledAll(options: { exceptGated?: boolean } = {}): Promise<void> {
    const pending = [...this.#pending].filter(([key]) => !options.exceptGated || !this.#gated.has(key));
    await Promise.allSettled(pending.map(([, p]) => p));
  }

  /**
   * Keeps `work` under `key` until it ends, so `settled()`/`settledAll()` wait for it; never rejects. Only the
   * entry `work` made is removed at its end, never a newer one under the same key.
   */
  #add(key: string, work: Promise<void>): void {
    const done: Promise<void> = work
      .catch((err: unknown) => this.#logger.warn("background cleanup failed", { key, error: err }))
      .finally(() => {
        if (this.#pending.get(key) === done) this.#pending.delete(key);
      });
    this.#pending.set(key, done);
  }

  /**
   * Deletes the task and then the record of container `id`, in the background, once `gate` (if any) resolves.
   * `taskDone` runs once the task deletion was tried, with whether it worked.
   */
  retire(id: string, taskDone?: (gone: boolean) => void, gate?: Promise<void>): void {
    if (this.#pending.has(id)) {
      taskDone?.(false);
      return;
    }
    this.#add(
      id,
      (async () => {
        if (gate) {
          this.#gated.add(id);
          await gate.finally(() => this.#gated.delete(id));
        }
        const gone = await deleteTask(this.#client, id, this.#logger).catch(() => false);
        taskDone?.(gone);
        if (!gone) return this.retryLater(id);
        try {
          await deleteContainerRecord(this.#client, id);
        } catch (err) {
          this.#logger.error("failed to delete a finished run's container; will retry in the background", { id, error: err });
          this.retryLater(id);
        }
      })(),
    );
  }

  /** Keeps track of other background cleanup (a FIFO directory's removal, keyed by its path). */
  track(key: string, work: Promise<void>): void {
    this.#add(key, work);
  }

  /** Deletes a finished exec process in the background; one already gone counts as deleted. */
  retireExec(containerId: string, execId: string): void {
    this.#add(`${containerId}/${execId}`, deleteExecProcess(this.#client, containerId, execId));
  }

  /**
   * A task containerd would not delete (containerd away, shim stuck): keep the record, so that prune can find
   * it if this process dies, and try again every 2 s until it goes or the executor closes.
   */
  retryLater(id: string): void {
    this.#orphans.add(id);
    this.#retrying ??= (async () => {
      while (this.#orphans.size > 0 && !this.#closing.aborted) {
        await sleep(RETRY_EVERY_MS, undefined, { signal: this.#closing }).catch(() => {});
        await this.#retryOrphans();
      }
    })().finally(() => {
      // After the assignment, even when the loop ends at once.
      this.#retrying = undefined;
    });
  }

  /**
   * Runs `fn` once the task of `id`, which containerd would not delete, is gone (at once if it is); if the
   * executor closes first, it never runs, and prune does its work once this process is gone.
   */
  whenOrphanGone(id: string, fn: () => Promise<void>): void {
    if (this.#orphans.has(id)) this.#afterOrphan.set(id, [...(this.#afterOrphan.get(id) ?? []), fn]);
    else this.#runAfter(id, [fn]);
  }

  /** Runs what waited for `id`'s task, one after the other, tracked for drain (a key of its own each time). */
  #runAfter(id: string, fns: readonly (() => Promise<void>)[]): void {
    const run = async () => {
      for (const fn of fns) await fn().catch((err: unknown) => this.#logger.warn("background cleanup failed", { id, error: err }));
    };
    this.track(`after-${id}-${++this.#afterCount}`, run());
  }

  async #retryOrphans(): Promise<void> {
    for (const id of [...this.#orphans]) {
      if (!(await deleteTask(this.#client, id, silentLogger).catch(() => false))) continue;
      // The task is gone: what waited for it (the run dir, the range) need not wait for the record too.
      const after = this.#afterOrphan.get(id);
      this.#afterOrphan.delete(id);
      if (after) this.#runAfter(id, after);
      try {
        await deleteContainerRecord(this.#client, id);
        this.#orphans.delete(id);
        this.#logger.info("finished the cleanup of an earlier run", { id });
      } catch {
        // next round
      }
    }
  }

  /** Waits for every background deletion, then gives the orphans one last try. Call after `closing` fired. */
  async drain(): Promise<void> {
    await Promise.allSettled([...this.#pending.values()]);
    await this.#retrying;
    await this.#retryOrphans().catch(() => {});
    // What waited for an orphan that went in that last try.
    await Promise.allSettled([...this.#pending.values()]);
  }
}

/**
 * After AlreadyExists for `id`: is the existing container a finished ctrexec run whose records are still being
 * deleted (by another executor of this process, or another process)? Waits up to `boundMs` for it to go and
 * returns true once it is gone; false at once for a live or foreign container, or when it does not go in time.
 */
export async function awaitRetiredRecord(client: ContainerdClient, id: string, signal: AbortSignal, boundMs = 3000): Promise<boolean> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    let labels: Record<string, string>;
    try {
      labels = (await client.containers.get(id, { signal })).labels;
    } catch (err) {
      if (err instanceof NotFoundError) return true;
      throw err;
    }
    if (!labels[LABEL.owner]) return false;
    const status = await client.tasks.get({ containerId: id }, { signal }).then(
      (t) => t.status,
      (err: unknown) => {
        if (err instanceof NotFoundError) return "NONE";
        throw err;
      },
    );
    if (status !== "STOPPED" && status !== "NONE") return false;
    if (Date.now() >= deadline) return false;
    await untilAborted(sleep(25), signal, () => `the wait for the earlier container ${id} to be deleted was canceled`);
  }
}

/** `work`, or a CanceledError (cause: the signal's reason) as soon as `signal` fires; `work` goes on regardless. */
async function untilAborted<T>(work: Promise<T>, signal: AbortSignal | undefined, what: () => string): Promise<T> {
  if (!signal) return work;
  const canceled = () => new CanceledError(what(), { cause: signal.reason });
  if (signal.aborted) throw canceled();
  let onAbort!: () => void;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(canceled());
    signal.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}
