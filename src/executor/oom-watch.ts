import { setTimeout as sleep } from "node:timers/promises";
import type { ContainerdClient } from "../containerd/client.js";
import type { Logger } from "../util/logger.js";

/**
 * How many OOM-killed container ids are remembered. The stream reports every container of the namespace, other
 * processes' and execs' too, and only our runs take theirs: without a bound the rest would pile up.
 */
export const OOM_MEMORY = 1024;

/**
 * Remembers which containers containerd reported OOM-killed (/tasks/oom), from one event stream per executor.
 * The stream is re-subscribed after a failure (containerd restarts) until the watch is closed. Neither keeps
 * the process alive: a run in progress has calls of its own in flight, and an idle executor that was never
 * closed must not hold its process open.
 *
 * A report belongs to the run it happened in: `forget` when a run with that id starts, so an earlier
 * container's OOM (another process's run, or an exec's process) is never pinned on it. At most `limit` ids are
 * kept, the oldest report dropped first.
 */
export class OomWatch {
  /** Reported ids, oldest first (a Map keeps insertion order). */
  readonly #seen = new Map<string, true>();
  readonly #limit: number;
  readonly #stop = new AbortController();
  readonly #done: Promise<void>;

  constructor(client: ContainerdClient, logger: Logger, limit = OOM_MEMORY) {
    this.#limit = limit;
    this.#done = (async () => {
      while (!this.#stop.signal.aborted) {
        try {
          for await (const e of client.events.subscribe([`topic=="/tasks/oom"`], { signal: this.#stop.signal, background: true })) {
            if (e.event?.type === "TaskOOM") this.#remember(e.event.containerId);
          }
        } catch (err) {
          if (this.#stop.signal.aborted) break;
          logger.debug("OOM event stream failed; subscribing again", { error: err });
        }
        await sleep(1000, undefined, { signal: this.#stop.signal, ref: false }).catch(() => {});
      }
    })();
  }

  #remember(containerId: string): void {
    this.#seen.delete(containerId); // a new report is the newest
    this.#seen.set(containerId, true);
    for (const oldest of this.#seen.keys()) {
      if (this.#seen.size <= this.#limit) break;
      this.#seen.delete(oldest);
    }
  }

  /** A run with this id starts: what was reported for an earlier container of that id is not its. */
  forget(containerId: string): void {
    this.#seen.delete(containerId);
  }

  /** True if the container was OOM-killed; forgets it. */
  take(containerId: string): boolean {
    return this.#seen.delete(containerId);
  }

  async close(): Promise<void> {
    this.#stop.abort();
    await this.#done;
  }
}
