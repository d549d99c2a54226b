import type { Retirement, ShimLease, ShimPolicy } from "./policy.js";

const noRetirement: Retirement = { gate: undefined, taskDone: () => {} };

/** A lease without sharing: the run starts a shim of its own, which exits with the run's task. */
export const OWN_SHIM: ShimLease = Object.freeze({
  group: undefined,
  labels: Object.freeze({}),
  retire: () => noRetirement,
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
