import { CanceledError, ContainerExitedError } from "../errors.js";
import type { Spec } from "../oci/types.js";

/**
 * One in-process run, as exec sees it: it waits for the start instead of polling (BuildKit polls every
 * 100 ms, reference §3.1), and learns how the run ended if it ended first.
 */
export class RunState {
  readonly id: string;
  spec: Spec | undefined;
  rootfs: string | undefined;
  #started = false;
  #ended: { error: unknown } | undefined;
  readonly #waiters = new Set<() => void>();

  constructor(id: string) {
    this.id = id;
  }

  markStarted(): void {
    this.#started = true;
    this.#wake();
  }

  /** The run is over (`error` undefined on success); wakes exec callers still waiting. */
  finish(error: unknown): void {
    this.#ended = { error };
    this.#wake();
  }

  #wake(): void {
    for (const w of this.#waiters) w();
    this.#waiters.clear();
  }

  /** Resolves once the process runs; rejects if the run ends first or `signal` fires. */
  async waitRunning(signal?: AbortSignal): Promise<void> {
    for (;;) {
      if (this.#ended) {
        const { error } = this.#ended;
        throw error === undefined
          ? new ContainerExitedError(`container ${this.id} has stopped`)
          : new ContainerExitedError(`container ${this.id} has exited with error: ${(error as Error).message ?? String(error)}`, {
              cause: error,
            });
      }
      if (this.#started) return;
      if (signal?.aborted) throw new CanceledError(`exec into ${this.id} was canceled`, { cause: signal.reason });
      await new Promise<void>((resolve) => {
        const wake = () => {
          signal?.removeEventListener("abort", wake);
          this.#waiters.delete(wake);
          resolve();
        };
        this.#waiters.add(wake);
        signal?.addEventListener("abort", wake, { once: true });
      });
    }
  }
}
