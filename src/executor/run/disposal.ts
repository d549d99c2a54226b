import type { ProcessIO } from "../../containerd/io.js";
import { removeTree } from "../../fs/remove-tree.js";
import type { Logger } from "../../util/logger.js";
import { type DeferOptions, type ReleaseContext, ReleaseStack } from "../../util/release-stack.js";
import type { Retirements } from "../retire.js";
import { removeRunDir, retireRunDir } from "../run-dirs.js";

type Release = (ctx: ReleaseContext) => unknown;

/**
 * A release in two forms. `now` runs before run() (or exec()) settles. Once the process's exit was seen the
 * run is handed over (`retireInBackground()`): its container's mount namespace died with its last process, nothing the
 * caller can see depends on what is left, and `background` runs instead, which passes the rest (task and
 * record deletion, removing directories) to the background retirements. A release without a `background`
 * form runs the same either way.
 */
export interface TwoPhaseRelease {
  now: Release;
  /** undefined: nothing to do before settling once the run was handed over (the background does it all). */
  background: Release | undefined;
}

/**
 * Everything one run or exec acquired, released in reverse order of acquisition (each registered right after
 * its acquire), in one of two phases. Phase one always happens: releases run before the run settles. If the
 * run was handed over first, the releases that have a background form take it (run/disposal is the one place
 * that decides what may outlive run()).
 */
export class RunDisposal {
  readonly #stack: ReleaseStack;
  #retiring = false;

  constructor(logger: Logger) {
    this.#stack = new ReleaseStack(logger);
  }

  /** Registers a release right after its acquire. */
  defer(name: string, release: Release | TwoPhaseRelease, options?: DeferOptions): void {
    if (typeof release === "function") {
      this.#stack.defer(name, release, options);
      return;
    }
    this.#stack.defer(name, (ctx) => (this.#retiring ? release.background?.(ctx) : release.now(ctx)), options);
  }

  /** The process's exit was seen: from now on, releases take their background form. */
  retireInBackground(): void {
    this.#retiring = true;
  }

  get retiring(): boolean {
    return this.#retiring;
  }

  /** For a step that registers its own releases on a plain stack (selector-mount). */
  get stack(): ReleaseStack {
    return this.#stack;
  }

  /** Runs every release, newest first; see ReleaseStack.release. */
  release(outcome: { succeeded: boolean }): Promise<Error[]> {
    return this.#stack.release(outcome);
  }

  /** The first failure of a release marked `failsRun`, once release() has resolved. */
  get failedRun(): Error | undefined {
    return this.#stack.failedRun;
  }
}

/**
 * After a hand-over, a run dir is moved out of its id's way and removed in the background (settled() waits),
 * with the default root's overlay (`mounted`) still in it.
 */
export async function retireRunDirLater(retirements: Retirements, dir: string, mounted: boolean): Promise<void> {
  const remove = (d: string) => (mounted ? removeTree(d) : removeRunDir(d));
  let retired: string | undefined;
  try {
    retired = retireRunDir(dir);
  } catch {
    return remove(dir);
  }
  if (retired) retirements.track(retired, remove(retired));
}

/** A process's IO: closed before settling, or after a hand-over (its streams have ended) its FIFO directory goes in the background. */
export function ioRelease(retirements: Retirements, ioReady: Promise<ProcessIO>): TwoPhaseRelease {
  return {
    now: async () => {
      const io = await ioReady.catch(() => undefined);
      await io?.close();
    },
    background: async () => {
      const io = await ioReady.catch(() => undefined);
      if (io?.dir) retirements.track(io.dir, io.close());
      else await io?.close();
    },
  };
}
