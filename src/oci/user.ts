import { closeSync, constants as fsc, fstatSync, openSync, readSync } from "node:fs";
import { InvalidArgumentError } from "../errors.js";
import { resolveInRoot } from "../fs/root-path.js";

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

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}
interface GroupEntry {
  name: string;
  gid: number;
  members: string[];
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
    uid: atoi(f[2] ?? "") ?? 0,
    gid: atoi(f[3] ?? "") ?? 0,
    home: f[5] ?? "",
  }));
}

export function parseGroup(text: string): GroupEntry[] {
  return lines(text).map((f) => ({
    name: f[0] ?? "",
    gid: atoi(f[2] ?? "") ?? 0,
    members: (f[3] ?? "").split(",").filter((m) => m !== ""),
  }));
}

/**
 * Reads a rootfs account file: resolved inside the root, regular files only, at most 10 MiB. A file that is
 * missing or not regular counts as absent (null), as in BuildKit. Synchronous, like resolveInRoot.
 */
export function readAccountFile(rootfs: string, path: string): string | null {
  let host: string;
  try {
    host = resolveInRoot(rootfs, path);
  } catch {
    return null; // a symlink loop: as good as absent
  }
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO planted at /etc/passwd must not block the open.
    fd = openSync(host, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch {
    return null;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return null;
    if (st.size > MAX_ACCOUNT_FILE_BYTES) {
      throw new InvalidArgumentError(`"${path}" exceeds ${MAX_ACCOUNT_FILE_BYTES} bytes`, { field: "user" });
    }
    const buf = Buffer.alloc(Math.min(st.size, MAX_ACCOUNT_FILE_BYTES) + 1);
    let n = 0;
    for (;;) {
      const bytesRead = readSync(fd, buf, n, buf.length - n, n);
      if (bytesRead === 0) break;
      n += bytesRead;
      if (n > MAX_ACCOUNT_FILE_BYTES) {
        throw new InvalidArgumentError(`"${path}" exceeds ${MAX_ACCOUNT_FILE_BYTES} bytes`, { field: "user" });
      }
      if (n === buf.length) break;
    }
    return buf.subarray(0, n).toString("utf8");
  } finally {
    closeSync(fd);
  }
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

  const match = passwd.find((u) => (userArg === "" ? u.uid === 0 : uidArg !== undefined ? u.uid === uidArg : u.name === userArg));
  let matchedName = "";
  if (match) {
    matchedName = match.name;
    user.uid = match.uid;
    user.gid = match.gid;
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
      groupArg === "" ? g.members.includes(matchedName) : gidArg !== undefined ? g.gid === gidArg : g.name === groupArg,
    );
    if (groupArg !== "") {
      const first = groups[0];
      if (first) user.gid = first.gid;
      else if (gidArg === undefined) {
        throw new InvalidArgumentError(`unable to find group ${groupArg}: no matching entries in group file`, {
          field: "user",
        });
      } else user.gid = rangeChecked(gidArg);
    } else {
      user.additionalGids = groups.map((g) => g.gid);
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
