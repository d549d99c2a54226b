import { existsSync } from "node:fs";
import { FailedPreconditionError } from "../errors.js";
import type { LinuxResources } from "../oci/spec.js";
import { findRootless, rootlessLayout } from "../rootless/layout.js";
import { inUserNamespace, isHostRoot } from "../util/user-namespace.js";
import type { ExecutorOptions } from "./options.js";

/** Says how to reach the namespaces where a rootless daemon's mounts are made. */
const ENTER_HINT = "start the process with `ctrexec rootless enter -- <command>`";

/**
 * The options with rootless mode's defaults: an unprivileged process finds its user's rootless containerd
 * (started by `ctrexec rootless start`) and takes its socket, state dir and FIFO root, which both its
 * namespaces and the host's see. Given options win. Root outside any user namespace keeps the system daemon.
 *
 * The process itself must run in the daemon's namespaces: every mount of a run (the root, its overlays, sub-path
 * binds) and every write as the container's ids needs root there, and a multi-threaded process cannot setns()
 * into a user or mount namespace. nerdctl and BuildKit do the same.
 */
export function withRootlessDefaults(options: ExecutorOptions, env: NodeJS.ProcessEnv = process.env): ExecutorOptions {
  const given = options.client?.address ?? options.address ?? (env["CONTAINERD_ADDRESS"] || undefined);
  const inNamespace = inUserNamespace();
  const unprivileged = !isHostRoot();
  const daemon = unprivileged ? findRootless(env, given) : undefined;
  // Another socket given: that one, as it is. The user's own rootless socket given (CONTAINERD_ADDRESS, as
  // nerdctl users set it): as if found.
  if (given !== undefined && !daemon) {
    // A process in a user namespace can only run containers in it, whatever daemon it talks to.
    const rootless = options.rootless ?? inNamespace;
    return rootless ? withLayoutDefaults({ ...options, rootless }, env) : options;
  }
  if (!unprivileged) return options;
  if (!daemon) {
    throw new FailedPreconditionError(
      "ctrexec as an unprivileged user needs that user's rootless containerd, and none runs: start it with `ctrexec rootless start` (once per machine, as root: scripts/setup-rootless.sh <user>)",
    );
  }
  if (!daemon.inside) {
    throw new FailedPreconditionError(
      `a rootless containerd runs for this user (${daemon.record.address}), but this process is outside its namespaces, where a run's mounts must be made: ${ENTER_HINT}`,
    );
  }
  const address = options.client ? {} : { address: daemon.record.address };
  return withLayoutDefaults({ ...options, ...address, rootless: options.rootless ?? true }, env);
}

function withLayoutDefaults(options: ExecutorOptions, env: NodeJS.ProcessEnv): ExecutorOptions {
  const layout = rootlessLayout(env);
  return {
    ...options,
    root: options.root ?? layout.stateDir,
    fifoRoot: options.fifoRoot ?? layout.fifoRoot,
    // There is no bridge to make: the host's network namespace is not the user namespace's to change.
    defaultNetwork: options.defaultNetwork ?? "host",
  };
}

/** cgroup v2's unified hierarchy is mounted on /sys/fs/cgroup (not v1, nor the hybrid layout). */
function cgroupV2(): boolean {
  return existsSync("/sys/fs/cgroup/cgroup.controllers");
}

/** Whether `resources` asks for any limit (an empty object asks for none). */
function asksForLimits(resources: LinuxResources | undefined): boolean {
  if (!resources) return false;
  return Object.values(resources).some((v) => v !== undefined);
}

/**
 * Refuses what a rootless containerd cannot give, before anything is created: runc could only say "cannot set
 * memory limit" or "permission denied" on a cgroup dir after the container record exists.
 */
export function checkRootlessRun(r: {
  resources?: LinuxResources | undefined;
  cgroupParent?: string | undefined;
  network?: string | undefined;
}): void {
  if (asksForLimits(r.resources) || r.cgroupParent) {
    const what = r.cgroupParent ? "a cgroup parent" : "resource limits";
    throw new FailedPreconditionError(
      cgroupV2()
        ? `${what} in rootless mode: ctrexec does not apply them through a delegated cgroup v2 subtree yet; run without them, or as root`
        : `${what}: cgroup v1 cannot delegate limits to an unprivileged user; use cgroup v2 or run as root`,
    );
  }
  if (r.network === "bridge") {
    throw new FailedPreconditionError(
      'network "bridge" is not available in rootless mode: ctrexec does not run CNI inside rootlesskit (with its host network there is no network namespace of the user\'s to bridge in); use network "host" (rootlesskit\'s network) or "none"',
    );
  }
}
