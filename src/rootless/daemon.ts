import { existsSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError } from "../errors.js";
import { writeFileAtomic } from "../fs/atomic-write.js";
import { withFileLockWaiting } from "../fs/file-lock.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { parentPid, processStartTime } from "../util/owner.js";
import { configPaths, containerdConfig } from "./containerd-config.js";
import { launch } from "./launch.js";
import {
  inUserNamespace,
  isInside,
  type RootlessLayout,
  type RootlessRecord,
  readRecord,
  recordAlive,
  recordEndedPidNamespace,
  rootlessLayout,
} from "./layout.js";
import { checkPrerequisites, currentUser, refuseRoot } from "./preflight.js";
import { daemonVersion, PROBE_MS, probeNetwork } from "./probe.js";
import { chooseNetwork, type NetworkRequest, parseNetworkRequest, type RootlessNetwork } from "./rootlesskit-args.js";
import { ensureRuntimeDir, makeDirs, removeRunFiles } from "./run-files.js";
import { endUnrecordedKits, isOurKit, STOP_WAIT_MS, terminate } from "./terminate.js";

/*
 * `ctrexec rootless start|stop|status` for the library: the user's containerd under rootlesskit, detached, with
 * the layout of layout.ts. start and stop hold the user's rootless lock, so one of them runs at a time.
 */

export interface RootlessOptions {
  logger?: Logger | undefined;
  /** The user's environment: XDG_RUNTIME_DIR, XDG_DATA_HOME, HOME and PATH decide the layout and the commands. */
  env?: NodeJS.ProcessEnv | undefined;
}

export interface StartRootlessOptions extends RootlessOptions {
  /** "auto" (default): slirp4netns where /dev/net/tun opens for the user and slirp4netns is installed, else host. */
  network?: NetworkRequest | undefined;
  /** How long containerd may take to answer. Default 20 s. */
  timeoutMs?: number | undefined;
}

export interface RootlessStatus {
  /** "stale": a record whose daemon is gone (killed, or the machine rebooted); start and stop clean it up. */
  state: "running" | "stopped" | "stale";
  /** rootlesskit's pid and its child's (init of the daemon's pid namespace), as the host numbers them. */
  pid?: number;
  childPid?: number;
  address: string;
  network?: RootlessNetwork;
  /** Whether containerd answered a Version call just now (running only). */
  answers?: boolean;
  version?: string;
  startedAt?: string;
  layout: RootlessLayout;
}

const DEFAULT_START_TIMEOUT_MS = 20_000;

/** Runs `fn` as the only start or stop of this user's daemon (layout.lockFile), waiting at most `waitMs`. */
function withRootlessLock<T>(layout: RootlessLayout, waitMs: number, fn: () => Promise<T>): Promise<T> {
  mkdirSync(dirname(layout.lockFile), { recursive: true, mode: 0o700 });
  return withFileLockWaiting(layout.lockFile, waitMs, fn, () => {
    return new DeadlineExceededError(
      `another 'ctrexec rootless start' or 'stop' of this user still runs (it holds ${layout.lockFile}); try again later`,
    );
  });
}

function statusOf(record: RootlessRecord, layout: RootlessLayout): Omit<RootlessStatus, "state"> {
  return {
    pid: record.rootlesskitPid,
    childPid: record.childPid,
    address: record.address,
    network: record.network,
    startedAt: record.startedAt,
    layout,
  };
}

/** The daemon's state. Inside its namespaces (after `ctrexec rootless enter`) being there proves it alive. */
export async function rootlessStatus(opts: RootlessOptions = {}): Promise<RootlessStatus> {
  // Root would probe, as root, the socket a user's record names, and print what the user wrote there.
  refuseRoot(currentUser().uid, inUserNamespace());
  const layout = rootlessLayout(opts.env ?? process.env);
  const record = readRecord(layout);
  if (!record) return { state: "stopped", address: layout.address, layout };
  if (!isInside(record) && !recordAlive(record)) return { state: "stale", ...statusOf(record, layout) };
  const version = await daemonVersion(record.address, PROBE_MS);
  return { state: "running", ...statusOf(record, layout), answers: version !== undefined, ...(version !== undefined ? { version } : {}) };
}

function checkTimeout(ms: number): number {
  if (!Number.isFinite(ms) || ms <= 0) {
    throw new InvalidArgumentError(`timeoutMs must be a positive number of milliseconds, not ${ms}`, { field: "timeoutMs" });
  }
  return ms;
}

/** The daemon's pid namespace ended with it: the next daemon's prune may then take its runs' leftovers as dead. */
function noteEnded(layout: RootlessLayout, record: RootlessRecord): void {
  if (record.pidns) recordEndedPidNamespace(layout, record.pidns);
}

/** A record whose daemon is gone: a rootlesskit of ours that is stuck without its child is ended; files removed. */
async function cleanUpStale(layout: RootlessLayout, record: RootlessRecord, log: Logger): Promise<void> {
  if (processStartTime(record.rootlesskitPid) !== undefined && isOurKit(record.rootlesskitPid, layout)) {
    await terminate(record.rootlesskitPid, undefined, log);
  }
  noteEnded(layout, record);
  removeRunFiles(layout);
  log.info("removed the record of a rootless containerd that is gone", { pid: record.rootlesskitPid, startedAt: record.startedAt });
}

/** A daemon already there: ours and answering (returned), ours and stuck, gone (cleaned up), or someone else's. */
async function existing(layout: RootlessLayout, log: Logger, env: NodeJS.ProcessEnv): Promise<RootlessStatus | undefined> {
  const status = await rootlessStatus({ env, logger: log });
  if (status.state === "running") {
    if (status.answers) return status;
    throw new FailedPreconditionError(
      `a rootless containerd runs (rootlesskit pid ${status.pid}) but does not answer on ${status.address}; see ${layout.logFile}, then run 'ctrexec rootless stop' and start again`,
    );
  }
  const record = readRecord(layout);
  if (status.state === "stale" && record) await cleanUpStale(layout, record, log);
  await endUnrecordedKits(layout, undefined, log);
  if ((await daemonVersion(layout.address, PROBE_MS)) !== undefined) {
    throw new FailedPreconditionError(
      `a containerd that ctrexec did not start already answers on ${layout.address} (rootless nerdctl's containerd-rootless.sh uses the same dirs): stop it first, or use it through CONTAINERD_ADDRESS`,
    );
  }
  return undefined;
}

/**
 * Starts the user's rootless containerd under rootlesskit, detached, and waits until it answers; idempotent (a
 * running one is returned as it is). On failure nothing it started is left running.
 */
export async function startRootless(opts: StartRootlessOptions = {}): Promise<RootlessStatus> {
  const env = opts.env ?? process.env;
  const log = opts.logger ?? silentLogger;
  const request = parseNetworkRequest(opts.network);
  const timeoutMs = checkTimeout(opts.timeoutMs ?? DEFAULT_START_TIMEOUT_MS);
  const user = currentUser();
  refuseRoot(user.uid, inUserNamespace());
  const layout = rootlessLayout(env);
  ensureRuntimeDir(layout); // the lock lives there
  // Another start may hold the lock for its whole wait and its clean-up.
  return withRootlessLock(layout, timeoutMs + 3 * STOP_WAIT_MS, async () => {
    const running = await existing(layout, log, env);
    if (running) {
      log.info("rootless containerd is already running", { pid: running.pid, address: running.address });
      return running;
    }
    checkPrerequisites({ user, env });
    const { network, reason } = chooseNetwork(request, probeNetwork(env));
    log.info(`rootless network: ${network}`, { reason });
    makeDirs(layout);
    await writeFileAtomic(layout.configFile, containerdConfig(configPaths(layout)), 0o600);
    removeRunFiles(layout);
    const { record, version } = await launch(layout, network, env, timeoutMs, log);
    return { state: "running", ...statusOf(record, layout), answers: true, version };
  });
}

/**
 * Stops the user's rootless containerd and everything in its namespaces; idempotent (not running: nothing to
 * do). The recorded pids are trusted only while the child still owns the recorded user namespace.
 */
export async function stopRootless(opts: RootlessOptions = {}): Promise<RootlessStatus> {
  // A record is its user's to write: host root signalling the pids one names would let that user aim root's kill.
  refuseRoot(currentUser().uid, inUserNamespace());
  const log = opts.logger ?? silentLogger;
  const layout = rootlessLayout(opts.env ?? process.env);
  const seen = readRecord(layout);
  if (seen && isInside(seen)) {
    throw new FailedPreconditionError(
      "this process runs inside the rootless daemon's namespaces (ctrexec rootless enter), from where it cannot be stopped: leave them (exit that shell) and run 'ctrexec rootless stop'",
    );
  }
  if (!existsSync(layout.runtimeDir)) {
    log.info("rootless containerd is not running", { runtimeDir: layout.runtimeDir });
    return { state: "stopped", address: layout.address, layout };
  }
  return withRootlessLock(layout, DEFAULT_START_TIMEOUT_MS + 3 * STOP_WAIT_MS, () => stopLocked(layout, log));
}

async function stopLocked(layout: RootlessLayout, log: Logger): Promise<RootlessStatus> {
  const stopped: RootlessStatus = { state: "stopped", address: layout.address, layout };
  // Read again under the lock: a start or stop may have finished while this one waited.
  const record = readRecord(layout);
  if (!record) {
    await endUnrecordedKits(layout, undefined, log);
    log.info("rootless containerd is not running");
    return stopped;
  }
  if (!recordAlive(record)) {
    await cleanUpStale(layout, record, log);
    await endUnrecordedKits(layout, undefined, log);
    return stopped;
  }
  const began = Date.now();
  // The child's parent is rootlesskit unless rootlesskit is gone; then the child is what holds the namespaces.
  const kitPid = parentPid(record.childPid) === record.rootlesskitPid ? record.rootlesskitPid : record.childPid;
  await terminate(kitPid, record.childPid, log);
  await endUnrecordedKits(layout, undefined, log);
  noteEnded(layout, record);
  removeRunFiles(layout);
  log.info("rootless containerd stopped", { ms: Date.now() - began, pid: record.rootlesskitPid });
  return stopped;
}
