import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { constants } from "node:os";
import { enterArgs, FailedPreconditionError, type RootlessDaemon } from "../index.js";

/** Set for a process started in the namespaces: one still outside then is a failure, not a reason to enter again. */
export const ENTERED_ENV = "CTREXEC_ROOTLESS_ENTERED";

/**
 * Signals passed on to the command inside. A terminal sends SIGINT and SIGQUIT to its whole foreground
 * process group, the command included: those are passed on only when no stdio is a terminal (a supervisor's
 * kill), or the command would get them twice. SIGWINCH comes from the terminal only.
 */
function forwarded(): NodeJS.Signals[] {
  const tty = process.stdin.isTTY || process.stdout.isTTY || process.stderr.isTTY;
  return tty ? ["SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2"] : ["SIGTERM", "SIGHUP", "SIGINT", "SIGQUIT", "SIGUSR1", "SIGUSR2"];
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
 * Runs `command` in the rootless daemon's namespaces through nsenter, with this process's stdio, cwd and
 * environment (XDG_RUNTIME_DIR set: inside, uid 0 would name another runtime dir), and resolves to its exit
 * code (128+n when a signal ended it). This process stays as the command's stand-in: signals sent to it reach
 * the command.
 */
export function runInside(daemon: RootlessDaemon, command: string[]): Promise<number> {
  if (daemon.inside) return spawnAndWait(command[0]!, command.slice(1), process.env);
  if (process.env[ENTERED_ENV]) {
    throw new FailedPreconditionError(
      `this process was started in the rootless containerd's namespaces but is not in them (socket ${daemon.record.address}): is the daemon that was entered still running? See \`ctrexec rootless status\``,
    );
  }
  const args = [...enterArgs(daemon), `--wd=${process.cwd()}`, "--", ...command];
  return spawnAndWait("nsenter", args, { ...process.env, XDG_RUNTIME_DIR: daemon.layout.runtimeDir, [ENTERED_ENV]: "1" }, true);
}

/** Runs `file` with this process's stdio and resolves to its exit code; `viaNsenter`: signals go to nsenter's child. */
function spawnAndWait(file: string, args: string[], env: NodeJS.ProcessEnv, viaNsenter = false): Promise<number> {
  const child = spawn(file, args, { stdio: "inherit", env });
  const pass = (sig: NodeJS.Signals) => {
    const pid = child.pid === undefined || !viaNsenter ? child.pid : commandPid(child.pid);
    if (pid !== undefined) {
      try {
        process.kill(pid, sig);
      } catch {
        // gone already: its exit is on its way
      }
    }
  };
  const signals = forwarded();
  for (const s of signals) process.on(s, pass);
  return new Promise<number>((resolve, reject) => {
    child.once("error", (err: NodeJS.ErrnoException) => {
      for (const s of signals) process.off(s, pass);
      reject(
        err.code === "ENOENT" && viaNsenter
          ? new FailedPreconditionError("nsenter is not installed: it comes with util-linux (apt-get install util-linux)", { cause: err })
          : err,
      );
    });
    child.once("exit", (code, signal) => {
      for (const s of signals) process.off(s, pass);
      resolve(signal ? 128 + (constants.signals[signal] ?? 0) : (code ?? 1));
    });
  });
}
