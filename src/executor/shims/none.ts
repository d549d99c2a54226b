import type { Retirement, ShimLease, ShimPolicy } from "./policy.js";

/** A retirement with nothing to wait for and nothing to hear: the task is deleted at once. */
export const NO_RETIREMENT: Retirement = Object.freeze({ gate: undefined, taskDone: () => {} });
/** A lease that adds no labels to the record. */
export const NO_LABELS: Readonly<Record<string, string>> = Object.freeze({});

/** A lease without sharing: the run starts a shim of its own, which exits with the run's task. */
export const OWN_SHIM: ShimLease = Object.freeze({
  group: undefined,
  labels: NO_LABELS,
  retire: () => NO_RETIREMENT,
  end: () => {},
});

/** No sharing: every run starts a shim of its own (`shims: "off"`, and the CLI's one run per process). */
export function offShims(): ShimPolicy {
  return {
    lease: () => OWN_SHIM,
    release: () => {},
    flush: () => {},
    settled: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
}
