import { execFile } from "node:child_process";
import { closeSync, fstatSync, mkdtempSync, openSync, rmdirSync, unlinkSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { InvalidArgumentError } from "../errors.js";
import { fdPath, isErrno, O, openInRoot, openRoot, withFd } from "../fs/in-root.js";
import { mountAt, unmountDetached } from "../fs/mount.js";
import type { Logger } from "../util/logger.js";
import { nativeAddon } from "../util/native.js";
import type { ReleaseStack } from "../util/release-stack.js";

const run = promisify(execFile);

/** Bind-mounts (recursively) the object `fd` refers to on `target`, read-only if asked. */
async function bindFromFd(fd: number, target: string, readonly: boolean): Promise<void> {
  if (nativeAddon()?.mount) {
    await mountAt({ type: "rbind", source: fdPath(fd), options: readonly ? ["rbind", "ro"] : ["rbind"] }, target);
    return;
  }
  // mount(8) is another process: our fd through our pid, and --no-canonicalize, else it would turn the fd back
  // into a path (realpath) and mount whatever that names by then.
  await run("mount", ["--no-canonicalize", "--rbind", `/proc/${process.pid}/fd/${fd}`, target]);
  if (readonly) await run("mount", ["--no-canonicalize", "-o", "remount,bind,ro", target]);
}

/** Tests: called once the sub-path is opened and checked, before it is mounted (a racer's best moment). */
export type SubPathHook = (step: "checked", hostPath: string) => void;

/**
 * Makes the sub-path `selector` of a mount source (mounted on the host at `sourceRoot`) ready for runc to
 * bind-mount: returns a path in the run dir, which no container can write, with exactly the checked directory
 * or file mounted on it.
 *
 * The source may be shared with a live container, which can swap any component of the selector for a symlink
 * (renameat2 RENAME_EXCHANGE) between a check of a path string and runc's mount of it tens of ms later, and so
 * have a host directory mounted in, writable. So the selector is opened once, inside the source
 * (openat2 RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS, O_PATH), its type checked on that fd, and the mount made from
 * /proc/self/fd/N, which is that inode whatever happens to the names meanwhile (BuildKit does the same). Its
 * unmount is registered on `stack` as soon as it exists.
 */
export async function mountSubPath(
  sourceRoot: string,
  selector: string,
  options: { dest: string; readonly: boolean; runDir: string; stack: ReleaseStack; logger: Logger; onStep?: SubPathHook },
): Promise<string> {
  const { dest } = options;
  const fd = withFd(openRoot(sourceRoot), (rootFd) => {
    try {
      return openInRoot(rootFd, selector, O.PATH);
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR", "ELOOP", "EXDEV")) {
        throw new InvalidArgumentError(`mount ${dest}: ${selector} does not exist in its source`, { field: "mounts", cause: err });
      }
      throw err;
    }
  });
  try {
    const st = fstatSync(fd);
    if (!st.isDirectory() && !st.isFile()) {
      throw new InvalidArgumentError(`mount ${dest}: ${selector} in its source is neither a directory nor a regular file`, {
        field: "mounts",
      });
    }
    options.onStep?.("checked", join(sourceRoot, selector));
    // The mount point: in the run dir (host-only), of the source's type.
    const base = mkdtempSync(join(options.runDir, "sub-"));
    const target = st.isDirectory() ? base : join(base, "file");
    if (!st.isDirectory()) closeSync(openSync(target, "wx", 0o600));
    const removeStub = () => {
      try {
        if (target !== base) unlinkSync(target);
        rmdirSync(base);
      } catch (err) {
        options.logger.warn("failed to remove a sub-path mount point", { path: base, error: err });
      }
    };
    try {
      await bindFromFd(fd, target, options.readonly);
    } catch (err) {
      // A half-made mount (bound, then the read-only remount failed) must not stay writable or mounted.
      await unmountDetached(target).catch(() => {});
      removeStub();
      throw err;
    }
    options.stack.defer(`unmount sub-path of ${dest}`, async () => {
      try {
        await unmountDetached(target);
      } catch (err) {
        // Still mounted: never remove anything below it.
        options.logger.warn("failed to unmount a sub-path mount", { path: target, error: err });
        return;
      }
      removeStub();
    });
    return target;
  } finally {
    closeSync(fd);
  }
}
