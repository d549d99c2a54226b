import { accessSync, constants as fsc, statSync } from "node:fs";
import { isAbsolute } from "node:path";
import { ContainerdClient } from "../containerd/index.js";
import {
  ContainerdExecutor,
  DEFAULT_FIFO_ROOT,
  DEFAULT_STATE_DIR,
  type ExecutorOptions,
  FailedPreconditionError,
  findRootless,
  InvalidArgumentError,
  inUserNamespace,
  type Logger,
  type LogLevel,
  type RootlessDaemon,
  stderrLogger,
} from "../index.js";
import type { OptionSpec, Parsed } from "./args.js";
import { flagError } from "./flags.js";

/** Options every command takes (before or after its name). */
export const GLOBAL_OPTIONS: readonly OptionSpec[] = [
  { name: "address", kind: "value", arg: "SOCKET", help: "containerd socket (default $CONTAINERD_ADDRESS or /run/containerd/containerd.sock)" },
  { name: "namespace", kind: "value", arg: "NS", help: "containerd namespace (default $CONTAINERD_NAMESPACE or ctrexec)" },
  { name: "root", kind: "value", arg: "DIR", help: "state dir (default $CTREXEC_ROOT or /var/lib/ctrexec)" },
  { name: "log-level", kind: "value", arg: "LEVEL", help: "log to stderr at debug, info, warn or error (default: no logs)" },
  {
    name: "insecure-registry",
    kind: "list",
    arg: "HOST",
    help: "registry HOST[:PORT] that may be reached over plain HTTP (repeatable; loopback always may)",
  },
  { name: "help", kind: "flag", help: "show this help" },
];

export interface Context {
  address: string | undefined;
  namespace: string | undefined;
  root: string;
  fifoRoot: string;
  /** The user's rootless containerd, when this process is unprivileged and was given no socket. */
  rootless: RootlessDaemon | undefined;
  /** Unprivileged, given no socket, and no rootless containerd runs for this user. */
  noDaemon: boolean;
  logger: Logger;
  /** --insecure-registry, from before and after the command's name. */
  insecureRegistries: string[];
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream;
}

/** The levels --log-level takes ("silent" is the default, not a choice). */
const CLI_LOG_LEVELS: readonly string[] = ["debug", "info", "warn", "error"] satisfies LogLevel[];

function isCliLogLevel(value: string): value is Exclude<LogLevel, "silent"> {
  return CLI_LOG_LEVELS.includes(value);
}

/** A regular file this process may execute (root passes access(X_OK) for any file with an x bit). */
function isExecutableFile(path: string): boolean {
  try {
    accessSync(path, fsc.X_OK);
    const st = statSync(path);
    return st.isFile() && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

export function contextFrom(parsed: Parsed, inherited?: Context): Context {
  const level = parsed.values.get("log-level");
  if (level !== undefined && !isCliLogLevel(level)) {
    throw new InvalidArgumentError(`invalid argument ${JSON.stringify(level)} for "--log-level": use debug, info, warn or error`, {
      field: "--log-level",
    });
  }
  const insecure = parsed.lists.get("insecure-registry") ?? [];
  for (const host of insecure) {
    if (!/^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$/.test(host)) {
      throw flagError("--insecure-registry", host, "expected HOST or HOST:PORT (no scheme, no path)");
    }
  }
  const address = parsed.values.get("address") ?? inherited?.address;
  const { rootless, noDaemon } = inherited && !parsed.values.has("address") ? inherited : findDaemon(address);
  return {
    address: address ?? rootless?.record.address,
    namespace: parsed.values.get("namespace") ?? inherited?.namespace,
    root: parsed.values.get("root") ?? inherited?.root ?? process.env["CTREXEC_ROOT"] ?? rootless?.layout.stateDir ?? DEFAULT_STATE_DIR,
    fifoRoot: inherited?.fifoRoot ?? process.env["CTREXEC_FIFO_ROOT"] ?? rootless?.layout.fifoRoot ?? DEFAULT_FIFO_ROOT,
    rootless,
    noDaemon,
    logger: level ? stderrLogger(level) : (inherited?.logger ?? stderrLogger("silent")),
    insecureRegistries: [...(inherited?.insecureRegistries ?? []), ...insecure],
    stdout: inherited?.stdout ?? process.stdout,
    stderr: inherited?.stderr ?? process.stderr,
  };
}

/**
 * An unprivileged process given no socket uses its user's rootless containerd (`ctrexec rootless start`), as
 * rootless nerdctl does; root keeps the system's.
 */
function findDaemon(address: string | undefined): { rootless: RootlessDaemon | undefined; noDaemon: boolean } {
  if (process.geteuid?.() === 0 && !inUserNamespace()) return { rootless: undefined, noDaemon: false };
  const given = address ?? (process.env["CONTAINERD_ADDRESS"] || undefined);
  // Another socket given: that one, as it is. The user's own rootless socket given: as if found.
  const rootless = findRootless(process.env, given);
  return { rootless, noDaemon: given === undefined && rootless === undefined };
}

/** What an unprivileged user without a rootless containerd is told, rather than a socket's "permission denied". */
export function checkDaemon(ctx: Context): void {
  if (ctx.noDaemon) {
    throw new FailedPreconditionError(
      "no rootless containerd runs for this user: start one with `ctrexec rootless start` (once per machine, as root: scripts/setup-rootless.sh <user>), or give --address",
    );
  }
}

/** `diagnose`: for info, which reports an unreachable daemon rather than failing. */
export function openClient(ctx: Context, diagnose = false): ContainerdClient {
  if (!diagnose) checkDaemon(ctx);
  return new ContainerdClient({ address: ctx.address, namespace: ctx.namespace });
}

/**
 * `CTREXEC_SHIM_LAUNCHER`: "off" (or 0, false, no) lets containerd run its own shim binary for every task, an
 * absolute path replaces the built launcher; unset or empty: the executor's default.
 */
export function shimLauncherFromEnv(): { shimLauncher?: string | false } {
  const v = process.env["CTREXEC_SHIM_LAUNCHER"];
  if (!v) return {};
  if (["off", "0", "false", "no"].includes(v.toLowerCase())) return { shimLauncher: false };
  if (!isAbsolute(v) || !isExecutableFile(v)) {
    throw new InvalidArgumentError(`CTREXEC_SHIM_LAUNCHER=${v}: use "off" or the absolute path of an executable file`, {
      field: "CTREXEC_SHIM_LAUNCHER",
    });
  }
  return { shimLauncher: v };
}

export function openExecutor(ctx: Context, extra: Partial<ExecutorOptions> = {}): Promise<ContainerdExecutor> {
  return ContainerdExecutor.create({
    ...shimLauncherFromEnv(),
    ...(ctx.address ? { address: ctx.address } : {}),
    ...(ctx.namespace ? { namespace: ctx.namespace } : {}),
    root: ctx.root,
    fifoRoot: ctx.fifoRoot,
    logger: ctx.logger,
    // One run per process: a shim kept for a next run would only be deleted at exit.
    shims: "off",
    ...extra,
  });
}
