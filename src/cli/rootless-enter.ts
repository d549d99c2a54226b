import { spawn } from "node:child_process";
import { closeSync, readFileSync, writeSync } from "node:fs";
import { constants } from "node:os";
import type { Readable } from "node:stream";
import { enterArgs, FailedPreconditionError, findRootless, type RootlessDaemon } from "../index.js";

/** Set for a process started in the namespaces: one still outside then is a failure, not a reason to enter again. */
export const ENTERED_ENV = "CTREXEC_ROOTLESS_ENTERED";
/** The fd on which ctrexec, re-executed inside, says it started: nsenter's own failures are then told apart. */
const STARTED_FD_ENV = "CTREXEC_ROOTLESS_STARTED_FD";
/** nsenter's exit status when it could not enter (util-linux's EXIT_FAILURE), as ctrexec's own failure. */
const EXIT_OWN_FAILURE = 125;

/**
 * Whether this process is in the foreground process group of its controlling terminal: then the terminal's
 * ^C and ^\\ reach the whole group, the command inside included, by themselves. `/proc/self/stat`'s pgrp,
 * tty_nr and tpgid (after the command name, which may hold spaces and parentheses).
 */
function terminalForeground(): boolean {
  try {
    const stat = readFileSync("/proc/self/stat", "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return Number(f[4]) !== 0 && f[5] === f[2];
  } catch {
    return false;
  }
}

/**
 * Signals passed on to the command inside, once each. In the terminal's foreground, the command is in this
 * process group and gets what the terminal sends (SIGINT, SIGQUIT) itself: passing those on would double
 * them, and one sent to this process alone cannot be told from the terminal's, so it is not passed on either.
 * Elsewhere the command runs in a process group of its own, and everything sent to this one (also to its
 * group: a CI runner's cancel, `timeout -s INT`) reaches it through here only.
 */
function forwarded(foreground: boolean): NodeJS.Signals[] {
  return foreground ? ["SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2"] : ["SIGTERM", "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
}

/** nsenter's child: the command itself (nsenter forks to enter the pid namespace, and forwards no signal). */
function commandPid(nsenterPid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${nsenterPid}/task/${nsenterPid}/children`, "utf8").trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * In ctrexec re-executed inside: says so to the stand-in outside (and lets go of the fd, which the command
 * must not inherit). Called first thing by the CLI.
 */
export function announceStarted(): void {
  const fd = Number(process.env[STARTED_FD_ENV]);
  delete process.env[STARTED_FD_ENV];
  if (!Number.isInteger(fd) || fd < 3) return;
  try {
    writeSync(fd, "1");
    closeSync(fd);
  } catch {
    // the stand-in is gone: nothing to tell
  }
}

/**
 * Runs `argv` (a ctrexec command line: node, its script, the arguments) in the rootless daemon's namespaces
 * through nsenter, with this process's stdio, cwd and environment (XDG_RUNTIME_DIR set: inside, uid 0 would
 * name another runtime dir), and resolves to its exit code (128+n when a signal ended it). This process stays
 * as the command's stand-in: signals sent to it reach the command.
 *
 * What runs inside is always ctrexec (`rootless enter -- CMD` goes through it too): nsenter runs with the
 * signals a terminal or a process group sends ignored, so that it lives as long as the command it waits for,
 * and Node sets every signal back to its default when it starts, as libuv does for what it spawns.
 */
export function runInside(daemon: RootlessDaemon, argv: string[]): Promise<number> {
  if (daemon.inside) return spawnAndWait(argv[0]!, argv.slice(1), process.env);
  if (process.env[ENTERED_ENV]) {
    throw new FailedPreconditionError(
      `${ENTERED_ENV} is set, as in a process ctrexec started inside the rootless containerd's namespaces, but this one is outside them (socket ${daemon.record.address}): unset it, and see \`ctrexec rootless status\``,
    );
  }
  const nsenter = [...enterArgs(daemon), `--wd=${process.cwd()}`, "--", ...argv];
  // sh ignores them, then becomes nsenter (exec), which keeps them ignored; $0 is nsenter.
  const shell = ["-c", 'trap "" INT QUIT TERM HUP; exec "$0" "$@"', "nsenter", ...nsenter];
  const env = { ...process.env, XDG_RUNTIME_DIR: daemon.layout.runtimeDir, [ENTERED_ENV]: "1", [STARTED_FD_ENV]: "3" };
  return spawnAndWait("/bin/sh", shell, env, true);
}

/** Runs `file` with this process's stdio and resolves to its exit code; `viaNsenter`: signals go to nsenter's child. */
function spawnAndWait(file: string, args: string[], env: NodeJS.ProcessEnv, viaNsenter = false): Promise<number> {
  const foreground = terminalForeground();
  // Out of the terminal's foreground, a group of its own (see forwarded): nothing reaches it twice.
  const child = spawn(file, args, { stdio: viaNsenter ? ["inherit", "inherit", "inherit", "pipe"] : "inherit", env, detached: !foreground });
  let started = !viaNsenter;
  /** What came before ctrexec inside said it started (nsenter has no child yet, or it still ignores them). */
  const early: NodeJS.Signals[] = [];
  const deliver = (sig: NodeJS.Signals) => {
    const pid = child.pid === undefined || !viaNsenter ? child.pid : commandPid(child.pid);
    if (pid === undefined) return;
    try {
      process.kill(pid, sig);
    } catch {
      // gone already: its exit is on its way
    }
  };
  const pass = (sig: NodeJS.Signals) => (started ? deliver(sig) : early.push(sig));
  (child.stdio[3] as Readable | null)
    ?.on("data", () => {
      started = true;
      for (const sig of early.splice(0)) deliver(sig);
    })
    .on("error", () => {});
  const signals = forwarded(foreground);
  // In the foreground, SIGINT and SIGQUIT reach the command by themselves: the stand-in waits for its end.
  const ignore = () => {};
  const ignored: NodeJS.Signals[] = foreground ? ["SIGINT", "SIGQUIT"] : [];
  for (const s of signals) process.on(s, pass);
  for (const s of ignored) process.on(s, ignore);
  const done = () => {
    for (const s of signals) process.off(s, pass);
    for (const s of ignored) process.off(s, ignore);
  };
  return new Promise<number>((resolve, reject) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      done();
      reject(
        err.code === "ENOENT" && viaNsenter
          ? new FailedPreconditionError("nsenter is not installed: it comes with util-linux (apt-get install util-linux)", { cause: err })
          : err,
      );
    });
    child.once("close", (code, signal) => {
      done();
      if (!started) {
        // nsenter could not enter (it said why on stderr): not an exit status of the command.
        process.stderr.write(
          `ctrexec: could not enter the rootless containerd's namespaces (nsenter exited ${code ?? signal}); see \`ctrexec rootless status\`\n`,
        );
        resolve(EXIT_OWN_FAILURE);
        return;
      }
      const status = signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1);
      if (viaNsenter && status === 128 + constants.signals.SIGKILL && !findRootless()) {
        process.stderr.write("ctrexec: the rootless containerd stopped while the command ran\n");
      }
      resolve(status);
    });
  });
}
