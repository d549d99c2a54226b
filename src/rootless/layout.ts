import {
  appendFileSync,
  closeSync,
  constants,
  fstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  realpathSync,
  renameSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { homedir } from "node:os";
import { dirname, isAbsolute, join, resolve } from "node:path";
import { bootId, type EndedPidNamespaces, fileIdentity } from "../util/owner.js";
import { inUserNamespace } from "../util/user-namespace.js";

export { inUserNamespace };

/**
 * Where a user's rootless containerd and ctrexec keep their files. The directories are rootless nerdctl's
 * (containerd-rootless.sh), so that a user who knows one knows the other: the runtime dir holds rootlesskit's
 * state and containerd's sockets, the data dir what outlives a reboot.
 */
export interface RootlessLayout {
  /** `$XDG_RUNTIME_DIR`, else /run/user/<uid> (setup-rootless.sh makes it where no logind does). */
  runtimeDir: string;
  /** rootlesskit's `--state-dir`: child_pid, api.sock. */
  kitStateDir: string;
  /** containerd's `--state`, bound on /run/containerd inside: shims and runc keep their files there whatever the config says. */
  containerdState: string;
  /** containerd's gRPC socket. */
  address: string;
  /** containerd's `--root`, bound on /var/lib/containerd inside. */
  containerdRoot: string;
  /** ctrexec's state dir in rootless mode (default rootfs, run dirs). */
  stateDir: string;
  /** ctrexec's FIFO root in rootless mode: a path both namespaces see (/run is copied up inside). */
  fifoRoot: string;
  /** The generated containerd config and the daemon's log. */
  configFile: string;
  logFile: string;
  /** What `ctrexec rootless start` recorded about the daemon it started. */
  recordFile: string;
  /**
   * What one start or stop at a time holds: without it two starts would both find no daemon, and the second would
   * remove the first's fresh socket before its own rootlesskit failed. Not in rootlesskit's state dir, which
   * rootlesskit removes when it exits (a lock file removed while held no longer excludes anyone).
   */
  lockFile: string;
  /** The pid namespaces of this user's daemons that ended (stopped, or found dead), one `BOOTID DEV:INO` a line. */
  endedFile: string;
}

/** What `ctrexec rootless start` records once the daemon answers. */
export interface RootlessRecord {
  version: 1;
  rootlesskitPid: number;
  /** rootlesskit's child: init of the daemon's pid namespace, owner of its namespaces (as the host numbers it). */
  childPid: number;
  network: "host" | "slirp4netns";
  /** Inode of the daemon's user namespace: what tells a live daemon from a reused pid, and inside from outside. */
  userns: number;
  address: string;
  startedAt: string;
  /** The daemon's pid namespace ("dev:ino", as owners name theirs): once it ends, every run of it has. */
  pidns?: string;
}

/** A rootless daemon found for this user. */
export interface RootlessDaemon {
  layout: RootlessLayout;
  record: RootlessRecord;
  /** This process runs in the daemon's user namespace (entered through `ctrexec rootless enter`). */
  inside: boolean;
}

function absolute(v: string | undefined): string | undefined {
  return v && isAbsolute(v) ? v : undefined;
}

/**
 * This process's uid as the host knows it: inside the daemon's user namespace it is 0, and the user's own uid
 * is what 0 maps to (uid_map's `0 <uid> 1`).
 */
function hostUid(): number {
  const own = process.getuid?.() ?? 0;
  if (own !== 0 || !inUserNamespace()) return own;
  try {
    for (const line of readFileSync("/proc/self/uid_map", "utf8").split("\n")) {
      const [inside, outside] = line.trim().split(/\s+/).map(Number);
      if (inside === 0 && outside !== undefined && Number.isInteger(outside)) return outside;
    }
  } catch {
    // no map to read: what the process says
  }
  return own;
}

/** A uid's home directory in /etc/passwd (the copy inside is the host's). */
function passwdHome(uid: number): string | undefined {
  try {
    for (const line of readFileSync("/etc/passwd", "utf8").split("\n")) {
      const f = line.split(":");
      if (f[2] === String(uid) && f[5] && isAbsolute(f[5])) return f[5];
    }
  } catch {
    // none to read
  }
  return undefined;
}

/** The layout for the user whose environment `env` is; inside the namespaces too, with or without that environment. */
export function rootlessLayout(env: NodeJS.ProcessEnv = process.env): RootlessLayout {
  const uid = hostUid();
  const runtimeDir = absolute(env["XDG_RUNTIME_DIR"]) ?? `/run/user/${uid}`;
  const home = absolute(env["HOME"]) ?? (uid === process.getuid?.() ? homedir() : passwdHome(uid)) ?? homedir();
  const dataHome = absolute(env["XDG_DATA_HOME"]) ?? join(home, ".local", "share");
  const kitStateDir = join(runtimeDir, "containerd-rootless");
  const containerdState = join(runtimeDir, "containerd");
  const stateDir = join(dataHome, "ctrexec");
  return {
    runtimeDir,
    kitStateDir,
    containerdState,
    address: join(containerdState, "containerd.sock"),
    containerdRoot: join(dataHome, "containerd"),
    stateDir,
    fifoRoot: join(runtimeDir, "ctrexec", "fifo"),
    configFile: join(stateDir, "rootless", "containerd.toml"),
    logFile: join(stateDir, "rootless", "containerd.log"),
    // Not in rootlesskit's state dir, which rootlesskit removes when it exits on its own: a daemon that died
    // stays known (stale) until start or stop notes its end.
    recordFile: join(runtimeDir, "ctrexec", "rootless.json"),
    endedFile: join(runtimeDir, "ctrexec", "ended-pid-namespaces"),
    lockFile: join(runtimeDir, "ctrexec", "rootless.lock"),
  };
}

function isPositiveInt(v: unknown): v is number {
  return typeof v === "number" && Number.isInteger(v) && v > 0;
}

/** The record, if there is one and it is well-formed; anything else reads as no daemon. */
export function readRecord(layout: RootlessLayout): RootlessRecord | undefined {
  let raw: unknown;
  let fd: number | undefined;
  try {
    fd = openSync(layout.recordFile, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const st = fstatSync(fd);
    // Only this user's own record, which no one else may have written: another's could aim our nsenter or kill.
    if (!st.isFile() || st.uid !== process.getuid?.() || (st.mode & 0o022) !== 0) return undefined;
    raw = JSON.parse(readFileSync(fd, "utf8"));
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
  if (typeof raw !== "object" || raw === null) return undefined;
  const r = raw as Record<string, unknown>;
  if (r["version"] !== 1 || !isPositiveInt(r["rootlesskitPid"]) || !isPositiveInt(r["childPid"]) || !isPositiveInt(r["userns"])) return undefined;
  if (r["network"] !== "host" && r["network"] !== "slirp4netns") return undefined;
  if (typeof r["address"] !== "string" || typeof r["startedAt"] !== "string") return undefined;
  // A daemon's user namespace is never the host's: a record naming the one this process is in, outside any
  // user namespace, would make it take itself for inside (or pid 1 for the daemon).
  if (!inUserNamespace() && r["userns"] === namespaceInode("self", "user")) return undefined;
  const pidns = typeof r["pidns"] === "string" && /^\d+:\d+$/.test(r["pidns"]) ? r["pidns"] : undefined;
  return {
    version: 1,
    rootlesskitPid: r["rootlesskitPid"],
    childPid: r["childPid"],
    network: r["network"],
    userns: r["userns"],
    address: r["address"],
    startedAt: r["startedAt"],
    ...(pidns ? { pidns } : {}),
  };
}

/** Inode of a namespace link of /proc (`user`, `mnt`...) of `pid`, or undefined where it cannot be looked at. */
export function namespaceInode(pid: number | "self", ns: string): number | undefined {
  try {
    return statSync(`/proc/${pid}/ns/${ns}`).ino;
  } catch {
    return undefined;
  }
}

/** Whether this process runs in the record's user namespace (entered through `ctrexec rootless enter`). */
export function isInside(record: RootlessRecord): boolean {
  return inUserNamespace() && namespaceInode("self", "user") === record.userns;
}

/** Whether the record's daemon still runs: its child is still the owner of the recorded user namespace (not a reused pid). */
export function recordAlive(record: RootlessRecord): boolean {
  return namespaceInode(record.childPid, "user") === record.userns;
}

/**
 * The user's rootless daemon, if `ctrexec rootless start` started one that still runs (and, given `address`,
 * that is its socket); undefined otherwise.
 * Inside its namespaces the host's pids mean nothing, and being there proves it alive.
 */
export function findRootless(env: NodeJS.ProcessEnv = process.env, address?: string): RootlessDaemon | undefined {
  const layout = rootlessLayout(env);
  const record = readRecord(layout);
  if (!record || (address !== undefined && !sameSocket(address, record.address))) return undefined;
  const inside = isInside(record);
  if (!inside && !recordAlive(record)) return undefined;
  return { layout, record, inside };
}

/**
 * nsenter's arguments that put a command in the daemon's namespaces, as nerdctl does: user and mount, pid (its
 * /proc is the pid namespace's), and network when rootlesskit made one (the host's cannot be re-entered from
 * the user namespace: EPERM). --preserve-credentials keeps the user's ids for the entry itself.
 */
export function enterArgs(daemon: RootlessDaemon): string[] {
  const args = ["--preserve-credentials", "-U", "-m", "-p", "-t", String(daemon.record.childPid)];
  if (daemon.record.network === "slirp4netns") args.push("-n");
  return args;
}

/** The pid namespace of a daemon's child, as its record keeps it (read while the daemon runs). */
export function daemonPidNamespace(childPid: number): string | undefined {
  return fileIdentity(`/proc/${childPid}/ns/pid`);
}

/**
 * Notes that a daemon's pid namespace ended (its rootlesskit is gone: with --pidns every process in it died),
 * so that prune, in the next daemon, knows the runs of the old one dead: their owners' pid namespace is not
 * one /proc can show. Lines are short and appended: concurrent writers do not mix.
 */
export function recordEndedPidNamespace(layout: RootlessLayout, pidns: string): void {
  if (endedPidNamespaces(layout).namespaces.has(pidns)) return;
  mkdirSync(dirname(layout.endedFile), { recursive: true, mode: 0o700 });
  appendFileSync(layout.endedFile, `${bootId()} ${pidns}\n`, { mode: 0o600 });
}

/**
 * Takes a live daemon's pid namespace off the list: the kernel hands a namespace's inode to the next namespace
 * made, so a new daemon often gets the inode of the one stopped before it. Only this boot's lines are kept.
 * Called under the start lock, which serialises every writer of the file.
 */
export function forgetEndedPidNamespace(layout: RootlessLayout, pidns: string): void {
  const { bootId: boot, namespaces } = endedPidNamespaces(layout);
  if (!namespaces.has(pidns)) return;
  const keep = [...namespaces].filter((ns) => ns !== pidns).map((ns) => `${boot} ${ns}\n`);
  const tmp = `${layout.endedFile}.${process.pid}.tmp`;
  writeFileSync(tmp, keep.join(""), { mode: 0o600 });
  renameSync(tmp, layout.endedFile);
}

/**
 * This boot's ended pid namespaces of the user's daemons (none when nothing was recorded), never the recorded
 * daemon's own: its inode may be one that ended before (start takes it off the list, and this holds also for a
 * list written meanwhile).
 */
export function endedPidNamespaces(layout: RootlessLayout): EndedPidNamespaces {
  const boot = bootId();
  const namespaces = new Set<string>();
  const live = readRecord(layout)?.pidns;
  let text = "";
  try {
    text = readFileSync(layout.endedFile, "utf8");
  } catch {
    // none recorded
  }
  for (const line of text.split("\n")) {
    const [b, ns] = line.split(" ");
    if (b === boot && ns && /^\d+:\d+$/.test(ns) && ns !== live) namespaces.add(ns);
  }
  return { bootId: boot, namespaces };
}

/** Two spellings of one unix socket: with or without `unix://`, relative or not, through symlinks or not. */
function sameSocket(a: string, b: string): boolean {
  const path = (s: string) => {
    const p = resolve(s.replace(/^unix:\/\//, ""));
    try {
      return realpathSync(p); // /var/run is /run
    } catch {
      return p;
    }
  };
  return path(a) === path(b);
}
