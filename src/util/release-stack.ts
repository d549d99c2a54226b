import { type Logger, silentLogger } from "./logger.js";

/** What a release learns about the work it cleans up after. */
export interface ReleaseContext {
  /**
   * The work succeeded: release() was told so, and no release marked `failsRun` has failed before this one
   * (a run whose task could not be deleted is a failed run, and keeps nothing, e.g. no commit).
   */
  succeeded: boolean;
}

export interface DeferOptions {
  /**
   * A failure of this release is the work's failure (BuildKit's rule for a run: deleting its task or its
   * container, or a release that keeps the run's result such as a commit). Other failures are only logged.
   */
  failsRun?: boolean;
}

/**
 * Releases registered right after each acquire and run in reverse (Node 20 has no AsyncDisposableStack).
 * Release is total: every entry runs even when an earlier one failed; failures are logged and returned.
 * Idempotent: each entry runs at most once, also when release() is called concurrently.
 */
export class ReleaseStack {
  readonly #entries: { name: string; fn: (ctx: ReleaseContext) => unknown; failsRun: boolean }[] = [];
  readonly #logger: Logger;
  #releasing: Promise<Error[]> | undefined;
  #failedRun: Error | undefined;

  constructor(logger: Logger = silentLogger) {
    this.#logger = logger;
  }

  /** Registers `fn` to run at release. `name` is what a failure log calls it. */
  defer(name: string, fn: (ctx: ReleaseContext) => unknown, options: DeferOptions = {}): void {
    if (this.#releasing) throw new Error(`ReleaseStack: defer("${name}") after release`);
    this.#entries.push({ name, fn, failsRun: options.failsRun === true });
  }

  get size(): number {
    return this.#entries.length;
  }

  /** The first failure of a release marked `failsRun` (once release() has resolved), else undefined. */
  get failedRun(): Error | undefined {
    return this.#failedRun;
  }

  /** Runs every release, newest first. `succeeded`: whether the work they clean up after succeeded. */
  release(outcome: { succeeded: boolean } = { succeeded: true }): Promise<Error[]> {
    this.#releasing ??= (async () => {
      const errors: Error[] = [];
      for (let e = this.#entries.pop(); e; e = this.#entries.pop()) {
        try {
          await e.fn({ succeeded: outcome.succeeded && this.#failedRun === undefined });
        } catch (err) {
          const error = err instanceof Error ? err : new Error(String(err));
          if (e.failsRun) {
            this.#failedRun ??= error;
            this.#logger.error(`cleanup: ${e.name} failed`, { error });
          } else this.#logger.warn(`cleanup: ${e.name} failed`, { error });
          errors.push(error);
        }
      }
      return errors;
    })();
    return this.#releasing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.release().then(() => undefined);
  }
}
