import { type ChildProcess, spawn } from "node:child_process";
import { closeSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { DeadlineExceededError, UnavailableError, UnknownError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic-write.js";
import type { Logger } from "../util/logger.js";
import { parentPid } from "../util/owner.js";
import { daemonPidNamespace, forgetEndedPidNamespace, namespaceInode, type RootlessLayout, type RootlessRecord } from "./layout.js";
import { logTail, openDaemonLog } from "./log-file.js";
import { daemonVersion, PROBE_MS } from "./probe.js";
import { type RootlessNetwork, rootlesskitArgs } from "./rootlesskit-args.js";
import { readChildPid, removeRunFiles } from "./run-files.js";
import { terminate } from "./terminate.js";

const POLL_MS = 50;

type KitExit = { code: number | null; signal: NodeJS.Signals | null };

function spawnKit(layout: RootlessLayout, network: RootlessNetwork, env: NodeJS.ProcessEnv, logFd: number): ChildProcess {
  const args = rootlesskitArgs({
    network,
    stateDir: layout.kitStateDir,
    containerdState: layout.containerdState,
    containerdRoot: layout.containerdRoot,
    configFile: layout.configFile,
  });
  // Detached: its own session, no terminal, so it outlives this process and no ^C of the caller's reaches it.
  const kit = spawn("rootlesskit", args, { detached: true, stdio: ["ignore", logFd, logFd], env: { ...env, XDG_RUNTIME_DIR: layout.runtimeDir } });
  kit.unref();
  return kit;
}

/** Waits until containerd answers, rootlesskit exits, or the deadline passes; returns containerd's version. */
async function waitAnswers(layout: RootlessLayout, exited: () => KitExit | undefined, timeoutMs: number): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const exit = exited();
    if (exit) {
      const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
      throw new UnavailableError(`rootless containerd did not start: rootlesskit ${how} before containerd answered on ${layout.address}`);
    }
    const left = deadline - Date.now();
    if (left <= 0) throw new DeadlineExceededError(`rootless containerd did not answer on ${layout.address} within ${timeoutMs / 1000} s`);
    const version = await daemonVersion(layout.address, Math.min(PROBE_MS, left));
    if (version !== undefined) return version;
    await sleep(Math.min(POLL_MS, Math.max(0, deadline - Date.now())));
  }
}

/** The record of a daemon that answers: its child (rootlesskit's, init of the namespaces) and their user namespace. */
function makeRecord(layout: RootlessLayout, kitPid: number, network: RootlessNetwork): RootlessRecord {
  const childPid = readChildPid(layout);
  if (childPid === undefined || parentPid(childPid) !== kitPid) {
    throw new UnknownError(`rootlesskit's child_pid (${childPid}) is not a child of rootlesskit (pid ${kitPid})`);
  }
  const userns = namespaceInode(childPid, "user");
  if (userns === undefined || userns === namespaceInode("self", "user")) {
    throw new UnknownError(`rootlesskit's child (pid ${childPid}) is not in a user namespace of its own`);
  }
  const pidns = daemonPidNamespace(childPid);
  return {
    version: 1,
    rootlesskitPid: kitPid,
    childPid,
    network,
    userns,
    address: layout.address,
    startedAt: new Date().toISOString(),
    ...(pidns ? { pidns } : {}),
  };
}

/** The error of a failed start, with the end of the daemon's log, which says why. */
function withTail(err: unknown, layout: RootlessLayout, offset: number): Error {
  const tail = logTail(layout.logFile, offset);
  const suffix = tail ? `\nlast lines of ${layout.logFile}:\n${tail}` : `\n(${layout.logFile} is empty)`;
  if (err instanceof UnavailableError) return new UnavailableError(err.message + suffix, { cause: err });
  if (err instanceof DeadlineExceededError) return new DeadlineExceededError(err.message + suffix, { cause: err });
  return new UnknownError(`rootless containerd did not start: ${(err as Error).message}${suffix}`, { cause: err });
}

export interface Launched {
  record: RootlessRecord;
  version: string;
}

/**
 * Spawns rootlesskit with containerd inside, waits until containerd answers, and writes the record. On any
 * failure it ends what it spawned (with --pidns that is everything), and the error carries the log's tail.
 */
export async function launch(
  layout: RootlessLayout,
  network: RootlessNetwork,
  env: NodeJS.ProcessEnv,
  timeoutMs: number,
  log: Logger,
): Promise<Launched> {
  const began = Date.now();
  const { fd, offset } = openDaemonLog(layout.logFile, `ctrexec rootless start ${new Date().toISOString()} network=${network}`);
  let kit: ChildProcess;
  let exit: KitExit | undefined;
  try {
    kit = spawnKit(layout, network, env, fd);
    kit.on("exit", (code, sig) => (exit ??= { code, signal: sig }));
    kit.on("error", (err) => (exit ??= { code: (err as NodeJS.ErrnoException).errno ?? -1, signal: null }));
  } finally {
    closeSync(fd); // the child has its own copy
  }
  try {
    if (kit.pid === undefined) throw new UnavailableError("rootlesskit could not be started");
    const version = await waitAnswers(layout, () => exit, timeoutMs);
    const record = makeRecord(layout, kit.pid, network);
    // Its pid namespace may have the inode of one that ended before: it is live now.
    if (record.pidns) forgetEndedPidNamespace(layout, record.pidns);
    await writeFileAtomic(layout.recordFile, `${JSON.stringify(record)}\n`, 0o600);
    log.info("rootless containerd answers", { ms: Date.now() - began, version, pid: record.rootlesskitPid, address: record.address });
    return { record, version };
  } catch (err) {
    if (kit.pid !== undefined) {
      await terminate(kit.pid, readChildPid(layout), log).catch((e: unknown) => log.warn("cleaning up after the failed start failed", { err: e }));
    }
    removeRunFiles(layout);
    throw withTail(err, layout, offset);
  }
}
