import { execFile } from "node:child_process";
import { lstatSync, readdirSync, readFileSync, readlinkSync, realpathSync } from "node:fs";
import { rm } from "node:fs/promises";
import { connect } from "node:net";
import { basename, dirname, join } from "node:path";
import { promisify } from "node:util";
import { removeTree } from "../fs/remove-tree.js";
import type { Logger } from "../util/logger.js";
import { fileIdentity, parentPid, processStartTime } from "../util/owner.js";
import { isExecutable } from "./shims/launcher.js";

const run = promisify(execFile);

/*
 * A runc v2 shim that hosts no task containerd knows of. containerd starts a task's shim inside Tasks.Create;
 * when the client is killed while that call is in flight, containerd may give up on the task after its shim
 * started ("shim disconnected ... failed to remove runc container") and forget it: the shim keeps running,
 * with no container or task record that prune, or containerd, would ever reach it through.
 *
 * Host safety: every process's command line is visible in the host's /proc, those of processes inside
 * containers included, and a container can exec anything with any argv. So a command line is never a source
 * of names: prune starts from ids it knows to be a dead owner's (its own run dirs and the records it removed),
 * looks for a shim started with exactly that namespace and id, and only builds paths from those known ids
 * (which also pass containerd's identifier rule). A process counts as a shim only when it runs the real shim
 * binary, in prune's own pid and mount namespaces, with a parent outside any container (see isShimProcess).
 */

/** Where containerd 1.6/1.7 keeps task bundles and the runc v2 shim its runc state (their defaults). */
const BUNDLES = "/run/containerd/io.containerd.runtime.v2.task";
const WORK_DIRS = "/var/lib/containerd/io.containerd.runtime.v2.task";
const RUNC_ROOT = "/run/containerd/runc";
const SHIM_SOCKETS = /^\/run\/containerd\/s\/[0-9a-f]{64}$/;
const SHIM_BINARY = "containerd-shim-runc-v2";
/** Where the shim binary is installed when the caller's PATH does not say (a service's short PATH). */
const SYSTEM_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/** containerd's identifier rule (pkg/identifiers): what a namespace or container id may be. */
const IDENTIFIER = /^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$/;
const MAX_IDENTIFIER = 76;

/** Whether `s` is a valid containerd namespace or container id: never `..`, `/`, or empty. */
export function isIdentifier(s: string): boolean {
  return s.length <= MAX_IDENTIFIER && IDENTIFIER.test(s);
}

export interface ShimProcess {
  pid: number;
  /** The process's start time, checked again right before it is signalled (never a pid alone). */
  start: string;
  /** Its exact command line, checked again with the start time. */
  cmdline: string;
  /** `dev:ino` of its executable (the real shim binary), checked again with the start time. */
  exe: string;
  /** The namespace and task id prune looked for (its own, never read from the command line). */
  namespace: string;
  id: string;
}

/**
 * The files a real runc v2 shim runs from: the one on PATH (containerd's lookup, also native/shim-launcher.c's)
 * and the one beside the containerd binary (containerd's fallback), by `dev:ino`, so that no copy or lookalike
 * elsewhere (a container's rootfs) counts. System directories are added for a caller with a short PATH: only
 * root can write there.
 */
export function shimBinaries(): Set<string> {
  const dirs = [...(process.env.PATH ?? "").split(":").filter((d) => d.startsWith("/")), ...SYSTEM_DIRS];
  const candidates = dirs.map((d) => join(d, SHIM_BINARY));
  const containerd = dirs.map((d) => join(d, "containerd")).find(isExecutable);
  if (containerd) {
    try {
      candidates.push(join(dirname(realpathSync(containerd)), SHIM_BINARY));
    } catch {
      // gone meanwhile
    }
  }
  const ids = new Set<string>();
  for (const c of candidates) {
    const id = isExecutable(c) ? fileIdentity(c) : undefined;
    if (id) ids.add(id);
  }
  return ids;
}

/** Whether a process runs as this process's user (real and effective uid): shims run as containerd's. */
function sameUser(pid: number): boolean {
  try {
    const line = readFileSync(`/proc/${pid}/status`, "utf8")
      .split("\n")
      .find((l) => l.startsWith("Uid:"));
    const [real, effective] = line?.slice(4).trim().split(/\s+/) ?? [];
    const uid = String(process.getuid?.() ?? -1);
    return real === uid && effective === uid;
  } catch {
    return false;
  }
}

/** Whether a process is in this process's pid and mount namespaces (false when that cannot be read). */
function inOurNamespaces(pid: number): boolean {
  for (const ns of ["pid", "mnt"]) {
    const theirs = fileIdentity(`/proc/${pid}/ns/${ns}`);
    if (theirs === undefined || theirs !== fileIdentity(`/proc/self/ns/${ns}`)) return false;
  }
  return true;
}

/**
 * Whether `pid` is a real shim daemon on this host's side, not a process inside a container dressed up as one:
 * - its executable is the shim binary itself (same file); a container's lookalike is another file;
 * - it runs as this process's user (root; containerd's user with rootless containerd), as a shim does;
 * - it is in prune's pid and mount namespaces: every container process has its own mount namespace;
 * - its parent is not inside a container: a shim daemon is reparented to init (ppid 1 in this pid namespace)
 *   or to a subreaper (containerd, systemd), which is in these namespaces too. A process whose parent is in
 *   another namespace, or cannot be inspected, is not taken for one (its shim would merely stay).
 * Returns its identity (start time, exe, command line) for the checks before the kill; undefined otherwise.
 */
function shimIdentity(pid: number, binaries: ReadonlySet<string>): Omit<ShimProcess, "namespace" | "id"> | undefined {
  const start = processStartTime(pid);
  if (start === undefined) return undefined;
  const exe = fileIdentity(`/proc/${pid}/exe`);
  if (exe === undefined || !binaries.has(exe)) return undefined;
  if (!inOurNamespaces(pid) || !sameUser(pid)) return undefined;
  const ppid = parentPid(pid);
  if (ppid === undefined || ppid === 0 || (ppid !== 1 && !inOurNamespaces(ppid))) return undefined;
  let cmdline: string;
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
  } catch {
    return undefined;
  }
  // All of it read from one process: the pid was not reused in between.
  return processStartTime(pid) === start ? { pid, start, exe, cmdline } : undefined;
}

/**
 * The shim daemons started for one of `ids` (ids prune knows to be a dead owner's) in `namespace` of the
 * containerd at `address`. Only the long-running form counts: `containerd-shim-runc-v2 -namespace NS -id ID
 * -address ADDR [-debug]`, exactly as containerd's runc v2 manager starts it (its short-lived `start`/`delete`
 * invocations end with that action and are containerd's). The command line only selects among known ids.
 */
export function findShims(namespace: string, address: string, ids: ReadonlySet<string>): ShimProcess[] {
  if (!isIdentifier(namespace)) return [];
  const wanted = new Set([...ids].filter(isIdentifier));
  if (wanted.size === 0) return [];
  let binaries: Set<string> | undefined;
  const out: ShimProcess[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let cmdline: string;
    try {
      cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8");
    } catch {
      continue;
    }
    const shim = parseShimCommand(cmdline);
    if (!shim || shim.namespace !== namespace || !wanted.has(shim.id) || plainAddress(shim.address) !== plainAddress(address)) continue;
    binaries ??= shimBinaries();
    const identity = shimIdentity(Number(entry), binaries);
    // The command line checked above must be the one of the verified process.
    // (shim.id equals one of the known ids, checked above.)
    if (identity && identity.cmdline === cmdline) out.push({ ...identity, namespace, id: shim.id });
  }
  return out;
}

const plainAddress = (a: string) => a.replace(/^unix:\/\//, "");

/** The flags of a runc v2 shim daemon's command line (NUL-separated); undefined for anything else. */
export function parseShimCommand(cmdline: string): { namespace: string; id: string; address: string } | undefined {
  const argv = cmdline.split("\0");
  if (argv.at(-1) === "") argv.pop();
  if (basename(argv[0] ?? "") !== SHIM_BINARY) return undefined;
  const flags = new Map<string, string>();
  for (let i = 1; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "-debug") continue;
    if ((a === "-namespace" || a === "-id" || a === "-address") && i + 1 < argv.length && !flags.has(a)) flags.set(a, argv[++i]!);
    else return undefined;
  }
  const namespace = flags.get("-namespace"),
    id = flags.get("-id"),
    address = flags.get("-address");
  if (!namespace || !id || !address) return undefined;
  return { namespace, id, address };
}

/** The unix socket the shim listens on (containerd's `address` for its tasks), from its open sockets. */
export function shimSocket(pid: number): string | undefined {
  const inodes = new Set<string>();
  try {
    for (const fd of readdirSync(`/proc/${pid}/fd`)) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkQuiet(`/proc/${pid}/fd/${fd}`) ?? "");
      if (m) inodes.add(m[1]!);
    }
    for (const line of readFileSync(`/proc/${pid}/net/unix`, "utf8").split("\n").slice(1)) {
      // Num RefCount Protocol Flags Type St Inode Path
      const f = line.trim().split(/\s+/);
      if (f.length >= 8 && inodes.has(f[6]!) && SHIM_SOCKETS.test(f[7]!)) return f[7];
    }
  } catch {
    // gone, or not ours to read
  }
  return undefined;
}

function readlinkQuiet(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/** Whether the socket address of the bundle of task `id` names `socket` (the task lives in that shim). */
export function bundleUsesSocket(namespace: string, id: string, socket: string): boolean {
  if (!isIdentifier(namespace) || !isIdentifier(id)) return false;
  try {
    return readFileSync(join(BUNDLES, namespace, id, "address"), "utf8").trim() === `unix://${socket}`;
  } catch {
    return false;
  }
}

/** Still the same verified process: same start time, executable, namespaces, parent rule and command line. */
function isSame(shim: ShimProcess, binaries: ReadonlySet<string>): boolean {
  const now = shimIdentity(shim.pid, binaries);
  return now !== undefined && now.start === shim.start && now.exe === shim.exe && now.cmdline === shim.cmdline;
}

/**
 * Gone, or a zombie waiting for its reaper (processStartTime gives none) whose other threads have exited too:
 * either way it serves nothing.
 */
function isGone(shim: ShimProcess): boolean {
  const start = processStartTime(shim.pid);
  if (start === shim.start) return false;
  if (start !== undefined) return true; // the pid is another process's now
  try {
    return readdirSync(`/proc/${shim.pid}/task`).length <= 1;
  } catch {
    return true;
  }
}

/** Whether something accepts connections on a unix socket (then the file is not a dead shim's to remove). */
function listening(socket: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = connect(socket, () => {
      c.destroy();
      resolve(true);
    });
    c.on("error", () => resolve(false));
    c.setTimeout(1000, () => {
      c.destroy();
      resolve(true);
    });
  });
}

function exists(path: string): boolean {
  try {
    lstatSync(path);
    return true;
  } catch {
    return false;
  }
}

export interface StopResult {
  /** Whether the shim process is gone (then neither it nor a container it started still runs). */
  stopped: boolean;
  /** What could not be removed or done, one line each (empty: all of it went). */
  left: string[];
}

/**
 * Stops an orphaned shim and removes what it and its task leave: the shim (SIGKILL to that exact process,
 * verified by start time, executable and command line just before), its socket file (a killed shim cannot
 * remove it), runc's state for the task (`runc delete --force`, which also kills a container process the shim
 * had created), and the task's bundle and work dirs (fd-relative, what is mounted below detached first: the
 * task's rootfs may still be mounted in the bundle). A new Tasks.Create for the id would fail on either of the
 * latter. The caller has established that the shim is a dead owner's. Bounded; never rejects.
 */
export async function stopOrphanShim(shim: ShimProcess, logger: Logger): Promise<StopResult> {
  // Paths are made from these: checked here too, whatever the caller did.
  if (!isIdentifier(shim.namespace) || !isIdentifier(shim.id)) return { stopped: false, left: [`shim ${shim.pid}: not a valid namespace or id`] };
  const binaries = shimBinaries();
  if (!isSame(shim, binaries)) return { stopped: false, left: [] }; // gone, or another process now: nothing to stop
  const socket = shimSocket(shim.pid);
  // Verified once more right before the signal: the pid names the process checked, not one that took it over.
  if (!isSame(shim, binaries)) return { stopped: false, left: [] };
  try {
    process.kill(shim.pid, "SIGKILL");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ESRCH") {
      logger.warn("stopping an orphaned shim failed", { pid: shim.pid, id: shim.id, error: err });
      return { stopped: false, left: [`orphaned shim of ${shim.id} (pid ${shim.pid}): ${(err as Error).message}`] };
    }
  }
  for (let i = 0; i < 50 && !isGone(shim); i++) await new Promise((r) => setTimeout(r, 20));
  if (!isGone(shim)) {
    logger.warn("an orphaned shim did not exit after SIGKILL", { pid: shim.pid, id: shim.id });
    return { stopped: false, left: [`orphaned shim of ${shim.id} (pid ${shim.pid}): did not exit after SIGKILL`] };
  }
  const left: string[] = [];
  if (socket) {
    // A killed Go process's threads exit one by one, and the last one closes its files: until then the
    // socket may still take connections (seen: its leader already a zombie, the socket still open).
    let open = await listening(socket);
    for (let i = 0; i < 50 && open; i++) {
      await new Promise((r) => setTimeout(r, 20));
      open = await listening(socket);
    }
    if (!open) await rm(socket, { force: true }).catch((err: unknown) => left.push(`shim socket ${socket}: ${(err as Error).message}`));
  }
  const runcRoot = join(RUNC_ROOT, shim.namespace);
  if (exists(join(runcRoot, shim.id))) {
    // `--`: an id is never taken for an option.
    await run("runc", ["--root", runcRoot, "delete", "--force", "--", shim.id], { timeout: 10_000 }).catch((err: unknown) => {
      logger.warn("runc delete of an orphaned shim's container failed", { id: shim.id, error: err });
      left.push(`runc state of ${shim.id}: ${(err as Error).message}`);
    });
  }
  for (const dir of [join(BUNDLES, shim.namespace, shim.id), join(WORK_DIRS, shim.namespace, shim.id)]) {
    await removeTree(dir).catch((err: unknown) => {
      logger.warn("removing an orphaned shim's task directory failed", { dir, error: err });
      left.push(`${dir}: ${(err as Error).message}`);
    });
  }
  return { stopped: true, left };
}
