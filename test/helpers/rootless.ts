import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { chmod, chown, cp, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before } from "node:test";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { mountPointsUnder } from "../../src/fs/mountinfo.js";

const execFileP = promisify(execFile);

/** The repository root (this file is dist/test/helpers/rootless.js once built). */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../../..");
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** What a command run as the user ended with. */
export interface UserCommandResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface UserCommandOptions {
  /** Extra environment (on top of HOME, XDG_RUNTIME_DIR, PATH, TMPDIR). */
  env?: Record<string, string>;
  /** Working directory (default: the user's home). */
  cwd?: string;
  /** Bound on the whole command; it is killed (SIGKILL, its process group) past it. */
  timeoutMs?: number;
  input?: string;
}

/**
 * A throwaway unprivileged user for the rootless pass: `ctrexec-t<hex>`, home and scratch dirs under one fresh tmp
 * dir, subordinate ids from scripts/setup-rootless.sh, a runtime dir /run/user/<uid>, and a copy of the build it can
 * read when the checkout is not readable by others. `dispose` removes all of it and fails on anything left.
 */
export interface RootlessUser {
  readonly name: string;
  readonly uid: number;
  readonly gid: number;
  /** The fresh 0755 tmp dir everything of the user lives under (home, scratch, app copy). */
  readonly base: string;
  readonly home: string;
  /** /run/user/<uid>, 0700, the user's. */
  readonly runtimeDir: string;
  /** A scratch dir owned by the user (its TMPDIR). */
  readonly scratch: string;
  /** Where the build is that the user runs: the checkout itself, or a readable copy of what runs need. */
  readonly app: string;
  /** The user's subordinate uid range [start, start + count). */
  readonly subuids: { start: number; count: number };
  /** The environment commands of the user get. */
  env(extra?: Record<string, string>): Record<string, string>;
  /** Runs `argv` as the user (runuser, a clean environment). Never rejects for a non-zero exit. */
  run(argv: readonly string[], options?: UserCommandOptions): Promise<UserCommandResult>;
  /** `node <app>/dist/src/cli/ctrexec.mjs ...args` as the user. */
  ctrexec(args: readonly string[], options?: UserCommandOptions): Promise<UserCommandResult>;
  /** Pids of live processes running as the user or one of its subordinate uids (any of real, effective, saved, fs uid). */
  processes(): number[];
  /** Stops whatever of the user still runs, removes the user and its files, and asserts nothing of it is left. */
  dispose(): Promise<void>;
}

/** A command's end and output, for assertion messages. */
export const showResult = (r: UserCommandResult): string => `exit ${r.code ?? r.signal}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

/** A throwaway user for one describe block: accessors that fail the test when its set-up failed. */
export interface RootlessSuite {
  u(): RootlessUser;
  /** `ctrexec ...args` as the user, in its scratch dir. */
  ctrexec(args: readonly string[], timeoutMs?: number, env?: Record<string, string>): Promise<UserCommandResult>;
  /** The CLI the user runs (for commands spelled out by hand: runuser, script, setsid). */
  cli(): string;
  /** The user's environment as `KEY=VALUE` words, for `env -i`. */
  vars(): string[];
}

/**
 * Makes a user in the describe block's `before`; in its `after`, stops the user's rootless daemon (if one runs)
 * and disposes of the user, which kills and reports whatever a failing test left.
 */
export function useRootlessUser(): RootlessSuite {
  let user: RootlessUser | undefined;
  const u = () => {
    assert.ok(user, "no test user (set-up failed)");
    return user;
  };
  const ctrexec = (args: readonly string[], timeoutMs = 60_000, env?: Record<string, string>) =>
    u().ctrexec(args, { timeoutMs, cwd: u().scratch, ...(env ? { env } : {}) });
  before(async () => {
    user = await createRootlessUser();
  });
  after(async () => {
    try {
      if (user) await ctrexec(["rootless", "stop"]);
    } finally {
      await user?.dispose();
    }
  });
  return {
    u,
    ctrexec,
    cli: () => join(u().app, "dist/src/cli/ctrexec.mjs"),
    vars: () => Object.entries(u().env()).map(([k, v]) => `${k}=${v}`),
  };
}

/** Runs a command as root; rejects with its stderr on failure. */
async function sh(cmd: string, args: readonly string[]): Promise<string> {
  try {
    return (await execFileP(cmd, args, { maxBuffer: 16 << 20 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(" ")}: ${e.stderr || e.message}`);
  }
}

/** The first subordinate range of `name` in /etc/subuid or /etc/subgid. */
export function subordinateRange(file: string, name: string): { start: number; count: number } | undefined {
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const [user, start, count] = line.split(":");
    if (user === name && start !== undefined && count !== undefined) return { start: Number(start), count: Number(count) };
  }
  return undefined;
}

/** Lines of /etc/passwd, /etc/group, /etc/shadow, /etc/subuid, /etc/subgid that name `name`. */
export function accountEntries(name: string): string[] {
  const out: string[] = [];
  for (const file of ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/subuid", "/etc/subgid"]) {
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n")) if (line.split(":")[0] === name) out.push(`${file}: ${line}`);
  }
  return out;
}

/** Pids of processes whose uids (any of the four) fall in one of `ranges`, read from /proc; zombies only if asked. */
export function processesOf(ranges: readonly { start: number; count: number }[], zombies = false): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let status: string;
    try {
      status = readFileSync(`/proc/${entry}/status`, "utf8");
    } catch {
      continue;
    }
    // A zombie is dead already: only its reaping by its parent (init, for a daemon's detached rootlesskit) is left.
    if (!zombies && /^State:\s+Z/m.test(status)) continue;
    const uids = /^Uid:\s+(.*)$/m.exec(status)?.[1]?.split(/\s+/).map(Number);
    if (uids?.some((u) => ranges.some((r) => u >= r.start && u < r.start + r.count))) pids.push(Number(entry));
  }
  return pids;
}

/** Polls `done` every 50 ms until it holds or `boundMs` passed; returns whether it held. */
export async function waitFor(done: () => boolean | Promise<boolean>, boundMs: number): Promise<boolean> {
  const deadline = Date.now() + boundMs;
  for (;;) {
    if (await done()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether `name` can read `file` and traverse every dir on the way (checked as that user, not guessed from modes). */
async function userCanRead(name: string, file: string): Promise<boolean> {
  return execFileP("runuser", ["-u", name, "--", "test", "-r", file]).then(
    () => true,
    () => false,
  );
}

/**
 * What a run of the library or CLI needs from the checkout: the compiled code (tests included), the native
 * addon and shim launcher, package.json (the CLI reads its version) and the one runtime dependency.
 */
const APP_PARTS = ["dist", "package.json", "build/Release/ctrexec_fifo.node", "build/ctrexec-shim", "node_modules/@bufbuild/protobuf"];

async function readableApp(name: string, base: string): Promise<string> {
  // CTREXEC_TEST_ROOTLESS_COPY=1 makes the copy even where the checkout is readable (to try CI's case locally).
  const forceCopy = process.env["CTREXEC_TEST_ROOTLESS_COPY"] === "1";
  if (!forceCopy && (await userCanRead(name, join(REPO_ROOT, "dist/src/index.js")))) return REPO_ROOT;
  // CI clones wherever it likes, often under a 0700 home: give the user a copy it can read.
  const app = join(base, "app");
  for (const part of APP_PARTS) {
    const from = join(REPO_ROOT, part);
    if (!existsSync(from)) continue;
    await mkdir(dirname(join(app, part)), { recursive: true });
    await cp(from, join(app, part), { recursive: true, preserveTimestamps: true });
  }
  await sh("chmod", ["-R", "a+rX", app]);
  return app;
}

function findCommand(cmd: string): string | undefined {
  for (const dir of PATH.split(":")) if (existsSync(join(dir, cmd))) return join(dir, cmd);
  return undefined;
}

/** Creates the user and everything it needs; on failure removes what it made. */
export async function createRootlessUser(): Promise<RootlessUser> {
  const name = `ctrexec-t${randomBytes(3).toString("hex")}`;
  const base = await mkdtemp(join(tmpdir(), "ctrexec-rootless-"));
  await chmod(base, 0o755);
  const home = join(base, "home");
  let created = false;
  let runtimeDir: string | undefined;
  try {
    await sh("useradd", ["-M", "-d", home, "-s", "/bin/sh", name]);
    created = true;
    const uid = Number((await sh("id", ["-u", name])).trim());
    const gid = Number((await sh("id", ["-g", name])).trim());
    await mkdir(home, { mode: 0o755 });
    await chown(home, uid, gid);
    const scratch = join(base, "scratch");
    await mkdir(scratch, { mode: 0o755 });
    await chown(scratch, uid, gid);

    const setup = join(REPO_ROOT, "scripts/setup-rootless.sh");
    if (existsSync(setup)) await sh("bash", [setup, name]);
    else if (!subordinateRange("/etc/subuid", name)) {
      // Until the setup script exists: the next free 65536 ids past every range already given.
      let next = 100000;
      for (const file of ["/etc/subuid", "/etc/subgid"]) {
        for (const line of readFileSync(file, "utf8").split("\n")) {
          const [, start, count] = line.split(":");
          if (start && count) next = Math.max(next, Number(start) + Number(count));
        }
      }
      const range = `${next}-${next + 65535}`;
      await sh("usermod", ["--add-subuids", range, "--add-subgids", range, name]);
    }
    const subuids = subordinateRange("/etc/subuid", name);
    assert.ok(subuids, `no /etc/subuid range for ${name}`);
    assert.ok(subordinateRange("/etc/subgid", name), `no /etc/subgid range for ${name}`);

    runtimeDir = `/run/user/${uid}`;
    await mkdir("/run/user", { recursive: true, mode: 0o755 });
    await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
    await chown(runtimeDir, uid, gid);
    await chmod(runtimeDir, 0o700);

    const app = await readableApp(name, base);
    const rt = runtimeDir;
    const env = (extra: Record<string, string> = {}): Record<string, string> => ({
      HOME: home,
      XDG_RUNTIME_DIR: rt,
      PATH,
      TMPDIR: scratch,
      ...extra,
    });
    const runuser = findCommand("runuser") ?? "runuser";
    const run = (argv: readonly string[], options: UserCommandOptions = {}): Promise<UserCommandResult> =>
      new Promise((resolvePromise, reject) => {
        const vars = Object.entries(env(options.env)).map(([k, v]) => `${k}=${v}`);
        // A process group of its own, so that the bound can kill whatever the command started.
        const child = spawn(runuser, ["-u", name, "--", "env", "-i", ...vars, ...argv], {
          cwd: options.cwd ?? home,
          detached: true,
          stdio: ["pipe", "pipe", "pipe"],
        });
        let stdout = "";
        let stderr = "";
        child.stdout.setEncoding("utf8").on("data", (s: string) => (stdout += s));
        child.stderr.setEncoding("utf8").on("data", (s: string) => (stderr += s));
        child.stdin.end(options.input ?? "");
        const timer =
          options.timeoutMs === undefined
            ? undefined
            : setTimeout(() => {
                stderr += `\n(killed: still running after ${options.timeoutMs} ms)`;
                try {
                  if (child.pid) process.kill(-child.pid, "SIGKILL");
                } catch {
                  // already gone
                }
              }, options.timeoutMs);
        child.once("error", reject);
        child.once("close", (code, signal) => {
          if (timer) clearTimeout(timer);
          resolvePromise({ code, signal, stdout, stderr });
        });
      });
    const ranges = [{ start: uid, count: 1 }, subuids];
    const processes = () => processesOf(ranges);

    const user: RootlessUser = {
      name,
      uid,
      gid,
      base,
      home,
      runtimeDir,
      scratch,
      app,
      subuids,
      env,
      run,
      ctrexec: (args, options) => run([process.execPath, join(app, "dist/src/cli/ctrexec.mjs"), ...args], options),
      processes,
      async dispose() {
        const problems: string[] = [];
        // What a failed test left running: the daemon first (with --pidns its end takes every container and
        // shim with it), then anything else of the user, by pid.
        const left = processes();
        if (left.length > 0) {
          problems.push(`processes of ${name} were still running at dispose: ${describe(left)}`);
          for (const sig of ["SIGTERM", "SIGKILL"] as const) {
            for (const pid of processes()) {
              try {
                process.kill(pid, sig);
              } catch {
                // gone meanwhile
              }
            }
            if (await waitFor(() => processes().length === 0, 5000)) break;
          }
        }
        const still = processes();
        if (still.length > 0) problems.push(`processes of ${name} survived SIGKILL: ${describe(still)}`);
        // userdel refuses a user with a process, a zombie too: give init a bounded moment to reap the daemon's.
        if (!(await waitFor(() => processesOf(ranges, true).length === 0, 5000))) {
          problems.push(`unreaped processes of ${name}: ${describe(processesOf(ranges, true))}`);
        }
        const mounts = mountPointsUnder(base);
        if (mounts.length > 0) problems.push(`mounts under ${base}: ${mounts.join(", ")}`);
        try {
          await sh("userdel", ["-r", name]);
        } catch (err) {
          problems.push(String(err));
        }
        // userdel -r removes the home; the rest of the tmp dir and the runtime dir are ours.
        await rm(base, { recursive: true, force: true }).catch((e: unknown) => problems.push(`rm ${base}: ${String(e)}`));
        await rm(rt, { recursive: true, force: true }).catch((e: unknown) => problems.push(`rm ${rt}: ${String(e)}`));
        const entries = accountEntries(name);
        if (entries.length > 0) problems.push(`account entries left: ${entries.join("; ")}`);
        if (existsSync(base)) problems.push(`${base} still exists`);
        if (existsSync(rt)) problems.push(`${rt} still exists`);
        assert.deepEqual(problems, [], `rootless test user ${name} was not removed cleanly`);
      },
    };
    return user;
  } catch (err) {
    if (created) await execFileP("userdel", ["-r", name]).catch(() => {});
    await rm(base, { recursive: true, force: true });
    if (runtimeDir) await rm(runtimeDir, { recursive: true, force: true });
    throw err;
  }
}

/** "pid (comm)" for each pid, for messages. */
function describe(pids: readonly number[]): string {
  return pids
    .map((pid) => {
      try {
        const status = readFileSync(`/proc/${pid}/status`, "utf8");
        const field = (k: string) => new RegExp(`^${k}:\\s+(.*)$`, "m").exec(status)?.[1] ?? "?";
        const argv = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").join(" ").trim().slice(0, 120);
        return `${pid} (${field("Name")}, state ${field("State")}, parent ${field("PPid")}${argv ? `: ${argv}` : ""})`;
      } catch {
        return String(pid);
      }
    })
    .join(", ");
}

/** Mode, owner, size and content of a file, to compare before and after a container had it. */
export async function fileFacts(path: string): Promise<{ mode: string; uid: number; gid: number; content: string; ino: number }> {
  const st = await stat(path);
  return { mode: (st.mode & 0o7777).toString(8), uid: st.uid, gid: st.gid, content: readFileSync(path, "utf8"), ino: st.ino };
}

/** Entries of a directory, sorted. */
export async function entriesOf(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}
