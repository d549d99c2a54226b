import { type Logger, silentLogger } from "./logger.js";

/**
 * Releases registered right after each acquire and run in reverse (Node 20 has no AsyncDisposableStack).
 * Release is total: every entry runs even when an earlier one failed; failures are logged and returned.
 * Idempotent: each entry runs at most once, also when release() is called concurrently.
 */
export class ReleaseStack {
  readonly #entries: { name: string; fn: () => unknown }[] = [];
  readonly #logger: Logger;
  #releasing: Promise<Error[]> | undefined;

  constructor(logger: Logger = silentLogger) {
    this.#logger = logger;
  }

  /** Registers `fn` to run at release. `name` is what a failure log calls it. */
  defer(name: string, fn: () => unknown): void {
    if (this.#releasing) throw new Error(`ReleaseStack: defer("${name}") after release`);
    this.#entries.push({ name, fn });
  }

  get size(): number {
    return this.#entries.length;
  }

  release(): Promise<Error[]> {
    this.#releasing ??= (async () => {
      const errors: Error[] = [];
      for (let e = this.#entries.pop(); e; e = this.#entries.pop()) {
        try {
          await e.fn();
        } catch (err) {
          const error = err instanceof Error ? err : new Error(String(err));
          this.#logger.warn(`cleanup: ${e.name} failed`, { error });
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
