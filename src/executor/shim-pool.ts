import { randomBytes } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import type { Logger } from "../util/logger.js";
import { startAnchor, stopAnchor } from "./shim-group.js";

interface WarmShim {
  group: string;
  anchor: string;
}

/** A warm shim lent to one run; `done()` once the run's task is deleted. */
export interface ShimLease {
  group: string;
  done(): void;
}

export interface ShimPoolOptions {
  client: ContainerdClient;
  /** How many warm shims to keep (idle plus lent). */
  size: number;
  /** The read-only rootfs of the anchors (the default rootfs). */
  rootfs: () => Promise<string>;
  runtime: string;
  logger: Logger;
}

/**
 * Shims started ahead of the runs that will use them, each lent to one run at a time. A run whose spec names a
 * warm shim's group skips the shim start in Tasks.Create (~5 ms, and ~8 ms of CPU). Unlike one shared group,
 * a shim never hosts two runs at once: its crash takes down one run, as without the pool, and concurrent runs
 * do not queue on one shim's lock. A run never waits for the pool: without an idle warm shim it starts its own,
 * while the pool fills up in the background, one anchor at a time.
 *
 * A warm shim that died is harmless to the run that gets it (containerd starts a fresh shim for the group);
 * it is noticed when the run gives it back, and replaced.
 */
export class ShimPool {
  readonly #o: ShimPoolOptions;
  readonly #idle: WarmShim[] = [];
  readonly #lent = new Set<WarmShim>();
  readonly #prefix = `ctrexec-${process.pid}-${randomBytes(3).toString("hex")}`;
  #next = 0;
  #warming: Promise<void> | undefined;
  /** Health checks of returned shims in flight. */
  readonly #checks = new Set<Promise<boolean>>();
  #closed = false;

  constructor(options: ShimPoolOptions) {
    this.#o = options;
  }

  /** An idle warm shim for one run, or undefined (the run starts its own shim). Tops the pool up. */
  take(): ShimLease | undefined {
    if (this.#closed) return undefined;
    // Oldest first: every warm shim gets lent, so a dead one is noticed (at its return) and replaced.
    const shim = this.#idle.shift();
    if (shim) this.#lent.add(shim);
    this.#fill();
    if (!shim) return undefined;
    let returned = false;
    return {
      group: shim.group,
      done: () => {
        if (returned) return;
        returned = true;
        this.#giveBack(shim);
      },
    };
  }

  #giveBack(shim: WarmShim): void {
    this.#lent.delete(shim);
    const check = (async (): Promise<boolean> => {
      // Still warm? An anchor whose task is not running means its shim died (or was killed): replace it.
      const status = await this.#o.client.tasks.get({ containerId: shim.anchor }, { timeoutMs: 10_000 }).then(
        (t) => t.status,
        () => "UNKNOWN",
      );
      if (status === "RUNNING" && !this.#closed) {
        this.#idle.push(shim);
        return false;
      }
      if (status !== "RUNNING") this.#o.logger.warn("a warm shim is gone; replacing it", { anchor: shim.anchor });
      await stopAnchor(this.#o.client, shim.anchor, this.#o.logger);
      return true;
    })();
    this.#checks.add(check);
    void check.then((replace) => {
      this.#checks.delete(check);
      if (replace) this.#fill();
    });
  }

  /** Starts anchors one after another until the pool has `size` shims. */
  #short(): boolean {
    return !this.#closed && this.#idle.length + this.#lent.size + this.#checks.size < this.#o.size;
  }

  #fill(): void {
    if (this.#warming || !this.#short()) return;
    this.#warming = (async () => {
      while (this.#short()) {
        const group = `${this.#prefix}-${this.#next++}`;
        try {
          const anchor = await startAnchor(this.#o.client, group, await this.#o.rootfs(), this.#o.runtime, this.#o.logger);
          if (this.#closed) {
            await stopAnchor(this.#o.client, anchor, this.#o.logger);
            break;
          }
          this.#idle.push({ group, anchor });
        } catch (err) {
          // Runs go on with shims of their own; the next take() tries again.
          this.#o.logger.warn("could not start a warm shim", { error: err });
          break;
        }
      }
    })().finally(() => {
      // Runs after the assignment above even when the loop had nothing to do.
      this.#warming = undefined;
    });
  }

  /** Resolves when every returned shim is back in the pool (or replaced, the replacement started). */
  async settled(): Promise<void> {
    while (this.#checks.size > 0) await Promise.allSettled([...this.#checks]);
  }

  /** Stops every anchor, idle or lent (a lent shim keeps running its run's task until that is deleted). */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#warming;
    await Promise.allSettled([...this.#checks]);
    const all = [...this.#idle.splice(0), ...this.#lent];
    this.#lent.clear();
    await Promise.all(all.map((s) => stopAnchor(this.#o.client, s.anchor, this.#o.logger)));
  }
}
