import { fstatSync } from "node:fs";
import { InvalidArgumentError } from "../errors.js";
import { FileTooLargeError, isErrno, O, openInRoot, openRoot, readRegularFile, withFd } from "../fs/in-root.js";

/** The uid and gids a process runs as. `additionalGids` are the supplementary groups found by lookup. */
export interface ResolvedUser {
  uid: number;
  gid: number;
  additionalGids: number[];
  home: string;
}

export const MAX_ID = 2 ** 31 - 1;
/** /etc/passwd and /etc/group larger than this are refused (a hostile rootfs could hand us anything). */
export const MAX_ACCOUNT_FILE_BYTES = 10 * 1024 * 1024;

/**
 * Ids read from a rootfs's /etc/passwd and /etc/group: what a uid_t can hold except (uid_t)-1, which means
 * "no change" to the kernel. Wider than MAX_ID (the range of ids given as numbers), so that images with
 * e.g. nfsnobody 4294967294 keep working; a negative, non-integer or larger value is an error when used.
 */
export const MAX_FILE_ID = 2 ** 32 - 2;

const RANGE_ERROR = `uids and gids must be in range 0-${MAX_ID}`;

function rangeChecked(n: number): number {
  if (!Number.isSafeInteger(n) || n < 0 || n > MAX_ID) throw new InvalidArgumentError(RANGE_ERROR, { field: "user" });
  return n;
}

/** Like Go's strconv.Atoi: an optional sign and decimal digits, nothing else. */
function atoi(s: string): number | undefined {
  return /^[+-]?\d+$/.test(s) ? Number(s) : undefined;
}

/**
 * The fast path: `uid:gid` (or `root` for either part) without reading any file. Returns undefined when the
 * spec is not of that form. Uses the same 0…2^31−1 range as the lookup path (BuildKit allowed 2^32−1 here only).
 */
export function parseUidGid(spec: string): { uid: number; gid: number } | undefined {
  if (spec === "") return { uid: 0, gid: 0 };
  const i = spec.indexOf(":");
  if (i < 0) return undefined;
  const part = (s: string) => (s === "root" ? 0 : /^\d+$/.test(s) ? Number(s) : undefined);
  const uid = part(spec.slice(0, i));
  const gid = part(spec.slice(i + 1));
  if (uid === undefined || gid === undefined) return undefined;
  return { uid: rangeChecked(uid), gid: rangeChecked(gid) };
}

/** An entry's ids as written: checked (fileId) only when the entry is used, so odd unused lines do no harm. */
interface PasswdEntry {
  name: string;
  uid: string;
  gid: string;
  home: string;
}
interface GroupEntry {
  name: string;
  gid: string;
  members: string[];
}

/** An id from an account file when it is a plain decimal number in 0…MAX_FILE_ID, else undefined. */
function parseFileId(s: string): number | undefined {
  if (!/^\d{1,10}$/.test(s)) return undefined;
  const n = Number(s);
  return n <= MAX_FILE_ID ? n : undefined;
}

/** An id of an entry that is used: InvalidArgumentError (field "user") naming the file and entry otherwise. */
function fileId(s: string, what: string): number {
  const n = parseFileId(s);
  if (n === undefined) {
    throw new InvalidArgumentError(
      `${what} is ${JSON.stringify(s)}, not an id in range 0-${MAX_FILE_ID}: fix the image's account file or give a numeric user`,
      { field: "user" },
    );
  }
  return n;
}

function lines(text: string): string[][] {
  return text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l !== "" && !l.startsWith("#"))
    .map((l) => l.split(":"));
}

export function parsePasswd(text: string): PasswdEntry[] {
  return lines(text).map((f) => ({
    name: f[0] ?? "",
    uid: f[2] ?? "",
    gid: f[3] ?? "",
    home: f[5] ?? "",
  }));
}

export function parseGroup(text: string): GroupEntry[] {
  return lines(text).map((f) => ({
    name: f[0] ?? "",
    gid: f[2] ?? "",
    members: (f[3] ?? "").split(",").filter((m) => m !== ""),
  }));
}

/**
 * Reads a rootfs account file, at most 10 MiB. It is opened inside the root (openat2 RESOLVE_IN_ROOT: a
 * symlink, also a parent directory swapped for one, resolves inside the root, never to the host's files) with
 * O_PATH, which opens nothing, and read only when fstat says it is a regular file: a device node (an armed
 * watchdog, a tty that would become our controlling terminal) or a FIFO planted there by an image or an
 * earlier run is never opened. Missing, or not a regular file, counts as absent (null), as in BuildKit: a
 * numeric user still works, and a name then fails as "no matching entries". Synchronous, like the rest of the
 * run path's small file work.
 */
export function readAccountFile(rootfs: string, path: string): string | null {
  let text: string | null = null;
  let root: number;
  try {
    root = openRoot(rootfs);
  } catch (err) {
    if (isErrno(err, "ENOENT", "ENOTDIR")) return null; // e.g. exec into a run whose root is gone: as in a lookup
    throw err;
  }
  withFd(root, (rootFd) => {
    let fd: number;
    try {
      fd = openInRoot(rootFd, path, O.PATH);
    } catch (err) {
      if (isErrno(err, "ENOENT", "ENOTDIR", "ELOOP", "EXDEV")) return; // absent (EXDEV: a magic link)
      throw err;
    }
    withFd(fd, () => {
      const st = fstatSync(fd);
      if (!st.isFile()) return;
      try {
        text = readRegularFile(fd, st, MAX_ACCOUNT_FILE_BYTES).toString("utf8");
      } catch (err) {
        if (err instanceof FileTooLargeError) {
          throw new InvalidArgumentError(`"${path}" exceeds ${MAX_ACCOUNT_FILE_BYTES} bytes`, { field: "user" });
        }
        throw err;
      }
    });
  });
  return text;
}

/**
 * Resolves `user[:group]` (names or numbers, mixed) against the rootfs's /etc/passwd and /etc/group with
 * libcontainer's semantics: a numeric user is always a uid; a name must exist; an explicit group gives no
 * supplementary groups; an implicit one gives every group listing the user. The empty spec is root, and any
 * failure for it falls back to 0:0 (so a rootfs without /etc/passwd still runs as root).
 */
export function getUser(rootfs: string, spec: string): ResolvedUser {
  const isDefault = spec === "";
  try {
    return lookupUser(rootfs, isDefault ? "0" : spec);
  } catch (err) {
    if (isDefault) return { uid: 0, gid: 0, additionalGids: [], home: "/" };
    throw err;
  }
}

function lookupUser(rootfs: string, spec: string): ResolvedUser {
  const fast = parseUidGid(spec);
  if (fast) return { ...fast, additionalGids: [], home: "/" };

  const colon = spec.indexOf(":");
  const userArg = colon < 0 ? spec : spec.slice(0, colon);
  const rest = colon < 0 ? "" : spec.slice(colon + 1);
  const groupArg = rest.includes(":") ? rest.slice(0, rest.indexOf(":")) : rest;
  const uidArg = atoi(userArg);
  const gidArg = atoi(groupArg);

  const passwdText = readAccountFile(rootfs, "/etc/passwd");
  const passwd = passwdText === null ? [] : parsePasswd(passwdText);
  const user: ResolvedUser = { uid: 0, gid: 0, additionalGids: [], home: "/" };

  const match = passwd.find((u) =>
    userArg === "" ? parseFileId(u.uid) === 0 : uidArg !== undefined ? parseFileId(u.uid) === uidArg : u.name === userArg,
  );
  let matchedName = "";
  if (match) {
    matchedName = match.name;
    user.uid = fileId(match.uid, `the uid of user ${JSON.stringify(match.name)} in /etc/passwd`);
    user.gid = fileId(match.gid, `the gid of user ${JSON.stringify(match.name)} in /etc/passwd`);
    user.home = match.home;
  } else if (userArg !== "") {
    if (uidArg === undefined) {
      throw new InvalidArgumentError(`unable to find user ${userArg}: no matching entries in passwd file`, {
        field: "user",
      });
    }
    user.uid = rangeChecked(uidArg);
  }

  if (groupArg !== "" || matchedName !== "") {
    const groupText = readAccountFile(rootfs, "/etc/group");
    const groups = (groupText === null ? [] : parseGroup(groupText)).filter((g) =>
      groupArg === "" ? g.members.includes(matchedName) : gidArg !== undefined ? parseFileId(g.gid) === gidArg : g.name === groupArg,
    );
    const gidOf = (g: GroupEntry) => fileId(g.gid, `the gid of group ${JSON.stringify(g.name)} in /etc/group`);
    if (groupArg !== "") {
      const first = groups[0];
      if (first) user.gid = gidOf(first);
      else if (gidArg === undefined) {
        throw new InvalidArgumentError(`unable to find group ${groupArg}: no matching entries in group file`, {
          field: "user",
        });
      } else user.gid = rangeChecked(gidArg);
    } else {
      user.additionalGids = groups.map(gidOf);
    }
  }
  return user;
}

/**
 * Supplementary groups for the process: the primary gid first, then the looked-up ones without repeats. Run
 * and exec both use this (BuildKit added the primary gid for run only, reference §12.10).
 */
export function processGids(user: ResolvedUser): number[] {
  return [user.gid, ...user.additionalGids.filter((g) => g !== user.gid)];
}
