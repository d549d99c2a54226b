import { accessSync, existsSync, constants as fsc, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_RUNTIME } from "../../containerd/task-cleanup.js";

/**
 * Which shim binary containerd runs for the executor's tasks; orthogonal to how runs share shims (policy.ts).
 *
 * containerd runs the runtime binary twice for every task, beside the shim's own RPCs: `start` in Tasks.Create,
 * even when the task joins a live shim (a shim group), and `delete` in Tasks.Delete, whenever the task's
 * connection to its shim closes, even when the shim deleted the container a moment before. With the runc v2
 * shim each is a Go process, and `delete` starts a Go runc as well: a large share of the CPU a short run costs
 * (docs/performance.md).
 *
 * ctrexec-shim (native/shim-launcher.c) goes in Tasks.Create's runtime_path (containerd/task-creator.ts). It
 * answers those two calls the way containerd-shim-runc-v2 would when their outcome is certain (the group's shim
 * answers; runc has no state for the container) and hands everything else to containerd-shim-runc-v2 unchanged.
 */

/** A regular file this process may execute (root passes access(X_OK) for any file with an x bit). */
export function isExecutable(path: string): boolean {
  try {
    accessSync(path, fsc.X_OK);
    const st = statSync(path);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * The package's root: the nearest directory above this module with a package.json. Searched for rather than
 * counted, because this code runs at two depths: as dist/src/executor/shims/launcher.js, and inlined in the CLI
 * bundle, dist/src/cli/ctrexec.mjs. No directory between the package root and either has a package.json.
 */
function packageRoot(): string | undefined {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json"))) return dir;
    const up = dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
}

/** The launcher built by scripts/build-native.mjs (build/ at the package root), when it is there and executable. */
export function builtShimLauncher(): string | undefined {
  const root = packageRoot();
  const path = root && join(root, "build/ctrexec-shim");
  return path && isExecutable(path) ? path : undefined;
}

/**
 * The containerd versions whose runc v2 shim the launcher mirrors (socket dir and name, the `address` file,
 * DeleteResponse, the runc root): 1.6 and 1.7. Another version gets it only when asked for by path.
 */
export function launcherKnowsShimOf(containerdVersion: string): boolean {
  const m = /^v?(\d+)\.(\d+)\./.exec(containerdVersion);
  return m?.[1] === "1" && (m[2] === "6" || m[2] === "7");
}

/**
 * The launcher an executor's tasks go through: `option` when given (false: none), else the built one, with the
 * runc v2 runtime on a containerd whose shim it mirrors. undefined: containerd runs its own shim binary.
 */
export function chooseShimLauncher(option: string | false | undefined, runtime: string, containerdVersion: string): string | undefined {
  if (option !== undefined) return option || undefined;
  return runtime === DEFAULT_RUNTIME && launcherKnowsShimOf(containerdVersion) ? builtShimLauncher() : undefined;
}
