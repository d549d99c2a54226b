import { lstatSync } from "node:fs";
import { chmod, chown, mkdir } from "node:fs/promises";
import { dirname, isAbsolute, posix, relative, resolve } from "node:path";
import { InvalidArgumentError, UnknownError } from "../errors.js";
import { resolveInRoot } from "./root-path.js";

/**
 * Creates the working directory `cwd` inside `rootfs` if it is missing: each missing component 0755 (the umask
 * does not apply) owned by uid:gid; existing components are left alone. Symlinks are resolved inside the
 * rootfs, never out of it. Returns the host path.
 */
export async function ensureCwd(rootfs: string, cwd: string, uid: number, gid: number): Promise<string> {
  if (!isAbsolute(cwd)) {
    throw new InvalidArgumentError(`working directory ${JSON.stringify(cwd)} must be an absolute path`, { field: "cwd" });
  }
  let host: string;
  try {
    host = resolveInRoot(rootfs, posix.normalize(cwd));
  } catch (err) {
    throw new InvalidArgumentError(`working dir ${cwd} points to invalid target: ${(err as Error).message}`, {
      field: "cwd",
      cause: err,
    });
  }
  try {
    lstatSync(host);
    return host; // exists (even as a file: the runtime's chdir will say so)
  } catch {
    // missing: create below
  }
  // Walk down from the deepest existing ancestor; resolveInRoot guarantees no existing component is a symlink.
  const missing: string[] = [];
  for (let p = host; relative(resolve(rootfs), p) !== ""; p = dirname(p)) {
    try {
      lstatSync(p);
      break;
    } catch {
      missing.unshift(p);
    }
  }
  try {
    for (const dir of missing) {
      await mkdir(dir, { mode: 0o755 });
      await chmod(dir, 0o755);
      await chown(dir, uid, gid);
    }
  } catch (err) {
    throw new UnknownError(`failed to create working directory ${host}: ${(err as Error).message}`, { cause: err });
  }
  return host;
}
