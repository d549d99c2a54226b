import { accessSync, constants, readFileSync, statSync } from "node:fs";
import { userInfo } from "node:os";
import { delimiter, join } from "node:path";
import { FailedPreconditionError } from "../errors.js";

/** One /etc/subuid or /etc/subgid range. */
export interface SubIdRange {
  start: number;
  count: number;
}

/**
 * The ranges `/etc/subuid`'s (or subgid's) text gives a user, who may be named by name or by uid, as
 * newuidmap reads it. Comments, blank and malformed lines are skipped.
 */
export function parseSubIds(text: string, user: string, uid: number): SubIdRange[] {
  const out: SubIdRange[] = [];
  for (const line of text.split("\n")) {
    const fields = line.trim().split(":");
    if (fields.length !== 3 || (fields[0] !== user && fields[0] !== String(uid))) continue;
    if (!/^\d+$/.test(fields[1]!) || !/^\d+$/.test(fields[2]!)) continue;
    const range = { start: Number(fields[1]), count: Number(fields[2]) };
    if (range.count > 0) out.push(range);
  }
  return out;
}

/** The executable file `name` resolves to on `PATH`, if any. */
export function findOnPath(name: string, env: NodeJS.ProcessEnv): string | undefined {
  for (const dir of (env["PATH"] ?? "").split(delimiter)) {
    if (!dir) continue;
    const p = join(dir, name);
    try {
      if (!statSync(p).isFile()) continue;
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  return undefined;
}

/** Commands a rootless daemon cannot start without: rootlesskit, its id-mapping helpers (uidmap) and containerd. */
export const REQUIRED_COMMANDS = ["rootlesskit", "newuidmap", "newgidmap", "containerd"] as const;

export interface UserIdentity {
  name: string;
  uid: number;
}

/** This process's user; a uid without a passwd entry keeps its number as its name (newuidmap matches either). */
export function currentUser(): UserIdentity {
  const uid = process.getuid?.() ?? -1;
  try {
    return { name: userInfo().username, uid };
  } catch {
    return { name: String(uid), uid };
  }
}

/** Root has the system containerd; a rootless daemon of root's would only shadow it with less. */
export function refuseRoot(uid: number, inUserNamespace: boolean): void {
  if (uid === 0 && !inUserNamespace) {
    throw new FailedPreconditionError(
      "rootless mode is for unprivileged users: root uses the system containerd (run ctrexec without 'rootless'); to prepare a user, run scripts/setup-rootless.sh <user>",
    );
  }
}

function readOr(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

export interface PrerequisiteInput {
  user: UserIdentity;
  env: NodeJS.ProcessEnv;
  /** Texts of /etc/subuid and /etc/subgid (read from the host unless given). */
  subuid?: string;
  subgid?: string;
}

/**
 * What is missing for a rootless start, all at once (one round trip to the administrator, not one per item);
 * empty when nothing is.
 */
export function missingPrerequisites(input: PrerequisiteInput): string[] {
  const missing: string[] = [];
  for (const cmd of REQUIRED_COMMANDS) {
    if (!findOnPath(cmd, input.env)) missing.push(`${cmd} is not on PATH${cmd === "containerd" ? " (scripts/setup.sh installs it)" : ""}`);
  }
  const { name, uid } = input.user;
  if (parseSubIds(input.subuid ?? readOr("/etc/subuid"), name, uid).length === 0) missing.push(`/etc/subuid has no range for ${name}`);
  if (parseSubIds(input.subgid ?? readOr("/etc/subgid"), name, uid).length === 0) missing.push(`/etc/subgid has no range for ${name}`);
  return missing;
}

/** Throws what is missing, with what to run. */
export function checkPrerequisites(input: PrerequisiteInput): void {
  const missing = missingPrerequisites(input);
  if (missing.length === 0) return;
  throw new FailedPreconditionError(
    `rootless containerd cannot start: ${missing.join("; ")}. As root, run: scripts/setup-rootless.sh ${input.user.name} (it installs rootlesskit, slirp4netns and uidmap and gives the user subuid/subgid ranges)`,
  );
}
