import { readdirSync, readFileSync, statSync } from "node:fs";
import { hostname } from "node:os";

/*
 * An owner is the process that made a container, run dir, lease, root-stub entry or namespace record, written
 * as `host/pid/starttime/bootid/pidns/timens`:
 * - pid: the owner's pid in its own pid namespace (getpid);
 * - starttime: /proc/<pid>/stat's start time (clock ticks since boot, as the owner's time namespace shows it),
 *   which tells the owner from a later process that got its pid;
 * - bootid: /proc/sys/kernel/random/boot_id, the same for every namespace of one kernel, new at each boot:
 *   equal boot ids mean the same running kernel, whatever the hostname (a container's own UTS namespace);
 * - pidns, timens: `dev:ino` of /proc/self/ns/pid and /proc/self/ns/time. A pid means something only in its
 *   pid namespace, and a start time only in its time namespace; "-" where the kernel has no such namespace.
 * Older versions wrote `host/pid/starttime` (see ownerAlive for how those are read). They split the new form
 * on "/" and read its first three fields the same way, so an older prune still reads new records as before.
 */

/** The initial pid namespace's inode number (PROC_PID_INIT_INO, include/linux/proc_ns.h): it sees every process. */
const INIT_PID_NS_INO = 0xeffffffc;

/** Fields after the command, which may hold spaces and parentheses: they start after the last ')'. */
function statFields(stat: string): string[] {
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ");
}

/** The parent pid of `pid`, or undefined when it is gone. */
export function parentPid(pid: number): number | undefined {
  try {
    const ppid = Number(statFields(readFileSync(`/proc/${pid}/stat`, "utf8"))[1]);
    return Number.isInteger(ppid) ? ppid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The kernel's start time of a pid (clock ticks since boot), which tells a live owner from a reused pid;
 * undefined for no process, and for a zombie (it has exited; only its exit status waits for its parent).
 */
export function processStartTime(pid: number | "self"): string | undefined {
  try {
    const f = statFields(readFileSync(`/proc/${pid}/stat`, "utf8"));
    return f[0] === "Z" || f[0] === "X" ? undefined : f[19];
  } catch {
    return undefined;
  }
}

/**
 * `dev:ino` of what `path` resolves to, or undefined when it cannot be read: a namespace file (ns/pid,
 * ns/time), a process's executable (/proc/PID/exe).
 */
export function fileIdentity(path: string): string | undefined {
  try {
    const st = statSync(path, { bigint: true });
    return `${st.dev}:${st.ino}`;
  } catch {
    return undefined;
  }
}

function readTrimmed(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8").trim() || undefined;
  } catch {
    return undefined;
  }
}

/** The pids of a process in each pid namespace from the /proc mount's down to its own (status's NSpid). */
function nsPids(pid: number | "self"): string[] | undefined {
  const line = readTrimmed(`/proc/${pid}/status`)
    ?.split("\n")
    .find((l) => l.startsWith("NSpid:"));
  return line?.slice(6).trim().split(/\s+/);
}

export interface ParsedOwner {
  host: string;
  pid: number;
  start: string;
  /** Absent in the older `host/pid/starttime` form. */
  bootId?: string;
  pidNs?: string;
  timeNs?: string;
}

const NEW_FORM = /^(.*)\/(\d+)\/(\d+)\/([0-9a-f-]+|-)\/(\d+:\d+|-)\/(\d+:\d+|-)$/;
const OLD_FORM = /^(.*)\/(\d+)\/(\d+)$/;

/** Parses either form; undefined for anything else (which every caller must treat as "unknown", never dead). */
export function parseOwner(owner: string): ParsedOwner | undefined {
  const n = NEW_FORM.exec(owner);
  if (n) return { host: n[1]!, pid: Number(n[2]), start: n[3]!, bootId: n[4]!, pidNs: n[5]!, timeNs: n[6]! };
  const o = OLD_FORM.exec(owner);
  return o ? { host: o[1]!, pid: Number(o[2]), start: o[3]! } : undefined;
}

/** What this process knows about itself and its /proc, read once. */
interface SelfFacts {
  bootId: string;
  pidNs: string;
  timeNs: string;
  /** The pid namespace the /proc mount shows (its pids are those of /proc/<pid>), when known. */
  procNs: string | undefined;
  /** Whether /proc shows every process of this kernel (the initial pid namespace's /proc). */
  procSeesAll: boolean;
}

let facts: SelfFacts | undefined;
function selfFacts(): SelfFacts {
  if (facts) return facts;
  const pidNs = fileIdentity("/proc/self/ns/pid") ?? "-";
  // A /proc mounted for an ancestor pid namespace (`unshare --pid` without a new /proc) lists our pid there
  // first: then its pids are that namespace's, whose init is its /proc/1.
  const pids = nsPids("self");
  const procNs = pids === undefined || pids.length <= 1 ? fileIdentity("/proc/self/ns/pid") : fileIdentity("/proc/1/ns/pid");
  facts = {
    bootId: readTrimmed("/proc/sys/kernel/random/boot_id") ?? "-",
    pidNs,
    timeNs: fileIdentity("/proc/self/ns/time") ?? "-",
    procNs,
    // Only root is sure to: /proc's hidepid hides other users' processes from the rest.
    procSeesAll: procNs?.endsWith(`:${INIT_PID_NS_INO}`) === true && process.getuid?.() === 0,
  };
  return facts;
}

let self: string | undefined;
/** This process as an owner (see above): who owns the containers, run dirs and namespaces it makes. */
export function ownerId(): string {
  if (self) return self;
  const f = selfFacts();
  // /proc/self, not /proc/<getpid()>: with a /proc of another pid namespace the latter is someone else.
  self = `${hostname()}/${process.pid}/${processStartTime("self") ?? "0"}/${f.bootId}/${f.pidNs}/${f.timeNs}`;
  return self;
}

/**
 * Looks for the owner in all of /proc when its pid namespace is not the one /proc shows: a process whose own
 * pid (the last of its NSpid) and start time are the owner's, in the owner's namespace (or one whose namespace
 * cannot be read: it might be the owner). True when found; false when not found and the owner's namespace is
 * visible here (one of its processes is, or /proc shows every process); undefined otherwise.
 */
function aliveElsewhere(o: ParsedOwner, compareStart: boolean, ended: boolean): boolean | undefined {
  let seen = false;
  let pidFound = false;
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    // status is readable for every process; ns/pid needs ptrace access, which may be refused (pid 1 often).
    const pids = nsPids(Number(entry));
    const ns = o.pidNs === undefined ? undefined : fileIdentity(`/proc/${entry}/ns/pid`);
    if (ns !== undefined && ns === o.pidNs) seen = true;
    if (pids?.at(-1) !== String(o.pid) || (ns !== undefined && o.pidNs !== undefined && ns !== o.pidNs)) continue;
    if (!compareStart) pidFound = true;
    else if (processStartTime(Number(entry)) === o.start) return true;
  }
  if (pidFound) return undefined;
  // Recorded as ended, and no process of it is to be seen: ended it has. (A namespace's inode is reused by the
  // next one made, so a live namespace may carry an ended one's inode: one process seen in it says so.)
  if (ended && !seen) return false;
  // Namespaces are visible whole: seeing one process of it means seeing all, to root (hidepid hides other
  // users' processes from the rest). From the initial namespace every namespace is visible.
  const root = process.getuid?.() === 0;
  return root && (seen || selfFacts().procSeesAll) ? false : undefined;
}

/**
 * True when the owner process is alive; false when it is certainly gone (`ended`: also when its pid namespace
 * is one of those, on this boot, and no process of it can be seen); undefined when this process cannot
 * tell (another host, a pid namespace it cannot see, a form it does not know). Callers treat anything but
 * false as alive: a record is removed only when its owner is known to be dead.
 *
 * - Another boot id: dead when the hostname is ours (this host rebooted; nothing survives a reboot), unknown
 *   otherwise (another machine sharing the state dir).
 * - Same kernel, the owner's pid namespace is the one /proc shows: its pid and start time decide, as before.
 * - Another pid namespace: decided only if /proc shows that namespace (a descendant of ours, or anything from
 *   the initial namespace): by the pid the owner had there and its start time; unknown otherwise. This is
 *   what keeps `unshare --pid --fork --mount-proc ctrexec prune` off the runs of the host's executors.
 * - A start time recorded in another time namespace cannot be compared: a missing pid still means dead.
 * - The older `host/pid/starttime` form says nothing of namespaces, so it is dead only where that cannot be
 *   wrong. A process with that pid and start time in /proc counts as alive (it may be another namespace's
 *   process, but then the answer errs on the safe side). From the initial pid namespace, as root, a process
 *   anywhere whose own pid and start time are those is alive and none means dead (a start time is the same
 *   from every pid namespace); from any other namespace the answer is unknown.
 *   So an older executor's leftovers on this host are pruned by a prune run on the host, as before, and never
 *   by a prune inside a container, which cannot see the processes the pids name.
 */
export function ownerAlive(owner: string, ended?: EndedPidNamespaces): boolean | undefined {
  const o = parseOwner(owner);
  if (!o) return undefined;
  const f = selfFacts();
  if (o.bootId === undefined) return oldFormAlive(o);
  const sameKernel = o.bootId !== "-" && o.bootId === f.bootId;
  if (!sameKernel) {
    if (o.host !== hostname()) return undefined;
    if (o.bootId !== "-" && f.bootId !== "-") return false;
    // No boot id on one side: the hostname says "this host", as in the older form; go on.
  }
  if (o.pidNs === "-" || f.procNs === undefined) return undefined;
  const compareStart = o.timeNs === f.timeNs;
  if (o.pidNs === f.procNs) {
    const start = processStartTime(o.pid);
    if (start === undefined) return false;
    return compareStart ? start === o.start : undefined;
  }
  const endedNs = sameKernel && o.pidNs !== undefined && ended?.bootId === f.bootId && ended.namespaces.has(o.pidNs);
  return aliveElsewhere(o, compareStart, endedNs);
}

/**
 * Pid namespaces known to have ended on this boot, with every process in them: those of a user's rootless
 * daemons that were stopped (or found dead). An owner there is dead even where /proc cannot show it.
 */
export interface EndedPidNamespaces {
  bootId: string;
  /** As fileIdentity gives them: "dev:ino" of the namespace's /proc/PID/ns/pid. */
  namespaces: ReadonlySet<string>;
}

/** This boot's id, which EndedPidNamespaces are recorded with. */
export function bootId(): string {
  return selfFacts().bootId;
}

function oldFormAlive(o: ParsedOwner): boolean | undefined {
  if (o.host !== hostname()) return undefined;
  if (processStartTime(o.pid) === o.start) return true;
  // Its namespace is unknown: only a /proc that shows every process can tell that it is gone.
  if (!selfFacts().procSeesAll) return undefined;
  return aliveElsewhere(o, true, false);
}
