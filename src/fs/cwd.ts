import { closeSync, fchmodSync, fchownSync, fstatSync, opendirSync } from "node:fs";
import { isAbsolute, join, posix, relative } from "node:path";
import { CtrexecError, InvalidArgumentError, UnknownError } from "../errors.js";
import { fdPath, isErrno, mkdirAt, O, openAt, openInRoot, openRoot, withFd } from "./in-root.js";
import { resolveInRootDetailed } from "./root-path.js";

/** Tests: called after each step on a component, so that a test can swap it for a symlink right then. */
export type CwdStepHook = (step: "created", hostPath: string) => void;

/**
 * Creates the working directory `cwd` inside `rootfs` if it is missing: each missing component 0755 (the umask
 * does not apply) owned by uid:gid; existing components are left alone. Symlinks are resolved inside the
 * rootfs, never out of it. Returns the host path.
 *
 * The root may be shared with live containers, which can swap any component for a symlink at any moment. So
 * the path is only a plan: the deepest existing ancestor is opened with openat2(RESOLVE_IN_ROOT), and each
 * missing component is made with mkdirat in its parent's fd, opened O_NOFOLLOW|O_DIRECTORY, and chmod'ed and
 * chown'ed through that fd. A component replaced by a symlink after its creation is an error, never followed.
 * One replaced by another directory (renameat2 RENAME_EXCHANGE in the same parent) is not ours: it is left
 * alone, like a concurrent creator's, and the walk goes on through it (see isFreshDir).
 */
export async function ensureCwd(rootfs: string, cwd: string, uid: number, gid: number, onStep?: CwdStepHook): Promise<string> {
  return ensureCwdSync(rootfs, cwd, uid, gid, onStep);
}

/**
 * ensureCwd, synchronously: for work that must run on this thread as another fsuid (fs/idmap.ts withFsIds);
 * `creatorUid` is that fsuid, the owner of the directories this thread makes.
 */
export function ensureCwdSync(
  rootfs: string,
  cwd: string,
  uid: number,
  gid: number,
  onStep?: CwdStepHook,
  creatorUid: number = process.geteuid?.() ?? 0,
): string {
  if (!isAbsolute(cwd)) {
    throw new InvalidArgumentError(`working directory ${JSON.stringify(cwd)} must be an absolute path`, { field: "cwd" });
  }
  let plan: { path: string; exists: boolean };
  try {
    plan = resolveInRootDetailed(rootfs, posix.normalize(cwd));
  } catch (err) {
    throw new InvalidArgumentError(`working dir ${cwd} points to invalid target: ${(err as Error).message}`, {
      field: "cwd",
      cause: err,
    });
  }
  // Exists (even as a file: the runtime's chdir will say so); nothing is done to it.
  if (plan.exists) return plan.path;
  const parts = relative(rootfs, plan.path)
    .split("/")
    .filter((c) => c !== "");
  try {
    withFd(openRoot(rootfs), (rootFd) => {
      // The deepest existing ancestor, resolved inside the root now (the plan may be stale already).
      let have = parts.length;
      let dirFd = -1;
      for (; have >= 0; have--) {
        try {
          dirFd = openInRoot(rootFd, parts.slice(0, have).join("/"), O.PATH | (have < parts.length ? O.DIRECTORY : 0));
          break;
        } catch (err) {
          if (!isErrno(err, "ENOENT")) throw err;
        }
      }
      try {
        for (let i = have; i < parts.length; i++) {
          const name = parts[i]!;
          let created = true;
          try {
            mkdirAt(dirFd, name, 0o755);
          } catch (err) {
            if (!isErrno(err, "EEXIST")) throw err;
            created = false; // a concurrent creator's: left alone, like any existing component
          }
          onStep?.("created", join(rootfs, ...parts.slice(0, i + 1)));
          // O_RDONLY, not O_PATH: fchmod and fchown need a real fd; O_DIRECTORY fails before any device open.
          const next = openAt(dirFd, name, O.RDONLY | O.DIRECTORY | O.NOFOLLOW);
          closeSync(dirFd);
          dirFd = next;
          if (created && isFreshDir(dirFd, creatorUid)) {
            fchmodSync(dirFd, 0o755);
            fchownSync(dirFd, uid, gid);
          }
        }
      } finally {
        closeSync(dirFd);
      }
    });
  } catch (err) {
    if (err instanceof CtrexecError) throw err;
    if (isErrno(err, "ELOOP", "ENOTDIR")) {
      throw new UnknownError(
        `failed to create working directory ${plan.path}: a component is not a directory, or was replaced by a symlink while it was being made (a container on the same root?) (${(err as Error).message})`,
        { cause: err },
      );
    }
    throw new UnknownError(`failed to create working directory ${plan.path}: ${(err as Error).message}`, { cause: err });
  }
  return plan.path;
}

/**
 * Whether the directory just opened under the name we mkdirat'ed is the one we made: owned by us (root) and
 * empty. A container can exchange the new name with one of its own directories between the mkdirat and the
 * open (RENAME_EXCHANGE in the same parent); chmod'ing and chown'ing that one to the run's user would hand it
 * someone else's directory (in a root shared by runs as different users). Not ours: left alone, not an error
 * (the same as a concurrent creator's directory; the run's chdir works or fails on its own). An empty directory
 * of root's swapped in is indistinguishable from ours and equally harmless to give away.
 */
function isFreshDir(fd: number, creatorUid: number): boolean {
  const st = fstatSync(fd);
  if (!st.isDirectory() || st.uid !== creatorUid || st.nlink > 2) return false;
  // nlink 2 is an empty directory on most filesystems, not all (btrfs counts 1): look, at one entry at most.
  // /proc/self/fd/N is exactly the directory the fd refers to.
  const dir = opendirSync(fdPath(fd), { bufferSize: 1 });
  try {
    return dir.readSync() === null;
  } finally {
    dir.closeSync();
  }
}
