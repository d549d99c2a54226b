import { execFile } from "node:child_process";
import { existsSync, constants as fsc } from "node:fs";
import { access, chmod, chown, copyFile, mkdir, mkdtemp, rename, rm, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { FailedPreconditionError } from "../errors.js";

/**
 * The built-in rootfs used when a run names none: the host's statically linked busybox with its applet links,
 * and the users and groups that tests and examples rely on. Built once into the state dir; the directory name
 * carries a format version so a change here rebuilds it instead of reusing an old tree.
 */

const FORMAT = "v2";
const BUSYBOX_CANDIDATES = ["/bin/busybox", "/usr/bin/busybox"];

export const DEFAULT_ROOTFS_PASSWD = [
  "root:x:0:0:root:/root:/bin/sh",
  "daemon:x:1:1:daemon:/usr/sbin:/bin/false",
  "nobody:x:65534:65534:nobody:/nonexistent:/bin/false",
  "user:x:1000:1000:user:/home/user:/bin/sh",
  "",
].join("\n");

export const DEFAULT_ROOTFS_GROUP = [
  "root:x:0:",
  "daemon:x:1:",
  "tty:x:5:",
  "wheel:x:10:root",
  "nogroup:x:65533:",
  "nobody:x:65534:",
  "user:x:1000:",
  "",
].join("\n");

/** Where the default rootfs lives under a state dir. */
export function defaultRootfsPath(stateDir: string): string {
  return join(stateDir, "rootfs", `busybox-${FORMAT}`);
}

async function findBusybox(): Promise<string> {
  for (const p of BUSYBOX_CANDIDATES) {
    try {
      await access(p, fsc.X_OK);
      return p;
    } catch {
      // next
    }
  }
  throw new FailedPreconditionError(
    "busybox is not installed, so the default rootfs cannot be built: apt-get install busybox-static " +
      "(scripts/setup.sh does), or give a rootfs directory",
  );
}

/**
 * Returns the default rootfs directory, building it first if needed. Safe to call concurrently, from several
 * processes too: each builds in its own temp dir and the first rename wins.
 */
export async function ensureDefaultRootfs(stateDir: string): Promise<string> {
  const target = defaultRootfsPath(stateDir);
  // Checked on every run without a root: synchronous, like the other small file operations on a run's path.
  if (existsSync(join(target, "bin", "busybox"))) return target;

  const busybox = await findBusybox();
  await mkdir(dirname(target), { recursive: true, mode: 0o755 });
  const tmp = await mkdtemp(join(dirname(target), ".build-"));
  try {
    await buildInto(tmp, busybox);
    await chmod(tmp, 0o755);
    try {
      await rename(tmp, target);
    } catch (err) {
      // Someone else finished first: theirs is as good as ours.
      if ((err as NodeJS.ErrnoException).code !== "ENOTEMPTY" && (err as NodeJS.ErrnoException).code !== "EEXIST") {
        throw err;
      }
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return target;
}

async function buildInto(root: string, busybox: string): Promise<void> {
  const dirs = ["bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "home/user", "proc", "sys", "dev", "run", "var", "tmp"];
  for (const d of dirs) await mkdir(join(root, d), { recursive: true, mode: 0o755 });
  await chmod(join(root, "tmp"), 0o1777);
  await chmod(join(root, "root"), 0o700);
  await copyFile(busybox, join(root, "bin", "busybox"));
  await chmod(join(root, "bin", "busybox"), 0o755);

  const { stdout } = await promisify(execFile)(busybox, ["--list-full"]);
  for (const rel of stdout.split("\n").map((l) => l.trim())) {
    if (!rel || rel.includes("..") || rel === "bin/busybox") continue;
    const link = join(root, rel);
    await mkdir(dirname(link), { recursive: true, mode: 0o755 });
    await symlink("/bin/busybox", link).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== "EEXIST") throw err;
    });
  }
  await writeFile(join(root, "etc", "passwd"), DEFAULT_ROOTFS_PASSWD, { mode: 0o644 });
  await writeFile(join(root, "etc", "group"), DEFAULT_ROOTFS_GROUP, { mode: 0o644 });
  await writeFile(join(root, "etc", "hostname"), "ctrexec\n", { mode: 0o644 });
  // Mount points that exist are not stubs: concurrent runs sharing this tree never remove them under each other.
  await writeFile(join(root, "etc", "hosts"), "", { mode: 0o644 });
  await writeFile(join(root, "etc", "resolv.conf"), "", { mode: 0o644 });
  await chown(join(root, "home", "user"), 1000, 1000);
}
