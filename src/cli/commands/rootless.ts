import {
  FailedPreconditionError,
  findRootless,
  InvalidArgumentError,
  inUserNamespace,
  type RootlessStatus,
  rootlessStatus,
  startRootless,
  stopRootless,
} from "../../index.js";
import { type OptionSpec, optionsHelp, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS } from "../context.js";
import { exitCodeFor } from "../exit-codes.js";
import { flagError } from "../flags.js";
import { runInside } from "../rootless-enter.js";

const OPTIONS: OptionSpec[] = [
  { name: "network", kind: "value", arg: "MODE", help: "start: auto (default), host or slirp4netns" },
  { name: "format", kind: "value", arg: "FORMAT", help: "status: text (default) or json" },
  ...GLOBAL_OPTIONS,
];

export const ROOTLESS_HELP = `Usage: ctrexec rootless start [--network auto|host|slirp4netns]
       ctrexec rootless stop
       ctrexec rootless status [--format json]
       ctrexec rootless enter [-- COMMAND [ARG...]]

Run containerd as this (unprivileged) user, in rootlesskit's user, mount and pid namespaces, as rootless
nerdctl does. Once it runs, this user's ctrexec commands and ContainerdExecutor.create() use it without flags.
Set up once per machine, as root: scripts/setup-rootless.sh USER.

  start    start the daemon, detached, and wait until it answers (does nothing if it runs)
  stop     stop the daemon and everything in it: containers, shims (does nothing if it is stopped)
  status   say whether it runs, its pid, socket and network; exit code 0 running, 3 stopped
  enter    run COMMAND (default: $SHELL) in the daemon's namespaces, where a program using the library
           must run: ctrexec rootless enter -- node app.js

Networks: auto picks slirp4netns (the containers get rootlesskit's own network) when /dev/net/tun is usable,
else host (the host's network).

Options:
${optionsHelp(OPTIONS)}

Examples:
  ctrexec rootless start
  ctrexec run --rm -- id
  ctrexec rootless enter -- node build.js
  ctrexec rootless stop
`;

function networkChoice(v: string | undefined): "auto" | "host" | "slirp4netns" {
  if (v === undefined || v === "auto" || v === "host" || v === "slirp4netns") return v ?? "auto";
  throw flagError("--network", v, "use auto, host or slirp4netns");
}

function describe(s: RootlessStatus): string {
  const lines = [`rootless containerd: ${s.state}${s.pid ? ` (rootlesskit pid ${s.pid})` : ""}`, `socket:              ${s.address}`];
  if (s.network) lines.push(`network:             ${s.network === "host" ? "host (the host's network)" : "slirp4netns (rootlesskit's own)"}`);
  if (s.state === "running") lines.push(`answers:             ${s.answers ? `yes${s.version ? `, containerd ${s.version}` : ""}` : "NO"}`);
  if (s.startedAt) lines.push(`started:             ${s.startedAt}`);
  if (s.state === "stale") lines.push("(the daemon recorded is gone: `ctrexec rootless start` starts a new one)");
  return `${lines.join("\n")}\n`;
}

export async function rootlessCommand(argv: string[], parent: Context): Promise<number> {
  const dash = argv.indexOf("--");
  const own = dash < 0 ? argv : argv.slice(0, dash);
  // Options may come before the action and after it (`rootless status --format json`): parsing stops at the
  // first positional, so what follows the action is parsed again.
  const first = parseOptions(own, OPTIONS, "rootless");
  const [action, ...after] = first.rest;
  const p = action === undefined ? first : parseOptions(after, OPTIONS, `rootless ${action}`);
  for (const [k, v] of first.values) if (!p.values.has(k)) p.values.set(k, v);
  for (const f of first.flags) p.flags.add(f);
  const ctx = contextFrom(p, contextFrom(first, parent));
  const extra = action === undefined ? [] : p.rest;
  if (p.flags.has("help") || action === undefined) {
    (action === undefined && !p.flags.has("help") ? ctx.stderr : ctx.stdout).write(ROOTLESS_HELP);
    return p.flags.has("help") ? 0 : 2;
  }
  if (action !== "enter" && (extra.length || dash >= 0)) {
    throw new InvalidArgumentError(`"ctrexec rootless ${action}" takes no arguments`, { field: "argv" });
  }
  const opts = { logger: ctx.logger };
  switch (action) {
    case "start": {
      const network = networkChoice(p.values.get("network"));
      let s: RootlessStatus;
      try {
        s = await startRootless({ ...opts, network });
      } catch (err) {
        // The whole message: a failed start ends with the daemon's log, which says why.
        ctx.stderr.write(`ctrexec: ${err instanceof Error ? err.message : String(err)}\n`);
        return exitCodeFor(err).code;
      }
      ctx.stdout.write(describe(s));
      return 0;
    }
    case "stop":
      await stopRootless(opts);
      ctx.stdout.write("rootless containerd: stopped\n");
      return 0;
    case "status": {
      const fmt = p.values.get("format") ?? "text";
      if (fmt !== "text" && fmt !== "json") throw flagError("--format", fmt, "use text or json");
      const s = await rootlessStatus(opts);
      ctx.stdout.write(fmt === "json" ? `${JSON.stringify(s, null, 2)}\n` : describe(s));
      return s.state === "running" ? 0 : 3;
    }
    case "enter": {
      if (process.geteuid?.() === 0 && !inUserNamespace()) {
        // The record that names the namespaces is the user's to write: host root must not run a command where it says.
        throw new FailedPreconditionError(
          "rootless mode is for unprivileged users: run `ctrexec rootless enter` as the user whose daemon it is (e.g. runuser -u USER -- ctrexec rootless enter)",
        );
      }
      const command = dash < 0 ? extra : [...extra, ...argv.slice(dash + 1)];
      const daemon = findRootless();
      if (!daemon) throw new FailedPreconditionError("no rootless containerd runs for this user: start it with `ctrexec rootless start`");
      const target = command.length ? command : [process.env["SHELL"] || "/bin/sh"];
      // From outside, through ctrexec itself inside (see runInside); inside, the command as it is.
      const through = [process.execPath, ...process.execArgv, process.argv[1]!, "rootless", "enter", "--", ...target];
      return runInside(daemon, daemon.inside ? target : through);
    }
    default:
      throw new InvalidArgumentError(`unknown rootless action ${JSON.stringify(action)}: use start, stop, status or enter`, { field: "argv" });
  }
}
