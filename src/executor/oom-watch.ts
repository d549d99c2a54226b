import { setTimeout as sleep } from "node:timers/promises";
import type { ContainerdClient } from "../containerd/client.js";
import type { Logger } from "../util/logger.js";

/**
 * Remembers which containers containerd reported OOM-killed (/tasks/oom), from one event stream per executor.
 * The stream is re-subscribed after a failure (containerd restarts) until the watch is closed. Neither keeps
 * the process alive: a run in progress has calls of its own in flight, and an idle executor that was never
 * closed must not hold its process open.
 */
export class OomWatch {
  readonly #seen = new Set<string>();
  readonly #stop = new AbortController();
  readonly #done: Promise<void>;

  constructor(client: ContainerdClient, logger: Logger) {
    this.#done = (async () => {
      while (!this.#stop.signal.aborted) {
        try {
          for await (const e of client.events.subscribe([`topic=="/tasks/oom"`], { signal: this.#stop.signal, background: true })) {
            if (e.event?.type === "TaskOOM") this.#seen.add(e.event.containerId);
          }
        } catch (err) {
          if (this.#stop.signal.aborted) break;
          logger.debug("OOM event stream failed; subscribing again", { error: err });
        }
        await sleep(1000, undefined, { signal: this.#stop.signal, ref: false }).catch(() => {});
      }
    })();
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
