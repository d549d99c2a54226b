import { setTimeout as sleep } from "node:timers/promises";
import { UnavailableError } from "../errors.js";
import type { Logger } from "../util/logger.js";
import type { ContainerdClient } from "./client.js";
import type { ExitStatus, ProcessRef } from "./types.js";

/** How long a run waits for containerd to come back before it gives up with UnavailableError. */
export const RECONNECT_BOUND_MS = 60_000;

/**
 * Tasks.Wait that survives a containerd restart: the shim keeps the exit status while containerd is away, so
 * when the call drops the wait is issued again (backing off from 100 ms to 2 s) until containerd answers or
 * `boundMs` has passed, then the last UnavailableError is thrown.
 */
export async function waitSurvivingRestarts(
  client: ContainerdClient,
  ref: ProcessRef,
  options: { boundMs?: number; logger?: Logger; signal?: AbortSignal } = {},
): Promise<ExitStatus> {
  const bound = options.boundMs ?? RECONNECT_BOUND_MS;
  let firstFailure: number | undefined;
  let backoff = 100;
  for (;;) {
    try {
      return await client.tasks.wait(ref);
    } catch (err) {
      if (!(err instanceof UnavailableError)) throw err;
      firstFailure ??= Date.now();
      if (Date.now() - firstFailure > bound) throw err;
      options.logger?.warn("containerd went away while waiting for a process; waiting for it to come back", {
        id: ref.execId || ref.containerId,
      });
      await sleep(backoff, undefined, options.signal ? { signal: options.signal } : {}).catch(() => {});
      backoff = Math.min(backoff * 2, 2000);
    }
  }
}
