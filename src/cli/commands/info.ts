import { diagnoseHost, type HostDiagnosis, InvalidArgumentError } from "../../index.js";
import { type OptionSpec, optionsHelp, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openClient, shimLauncherFromEnv } from "../context.js";
import { EXIT_OWN_FAILURE } from "../exit-codes.js";
import { flagError } from "../flags.js";
import { VERSION } from "../version.js";

const OPTIONS: OptionSpec[] = [{ name: "format", kind: "value", arg: "FORMAT", help: "text (default) or json" }, ...GLOBAL_OPTIONS];
export const INFO_HELP = `Usage: ctrexec info [--format json]

Show what ctrexec runs on: containerd, runtime, cgroups, security features, user namespaces
(and whether idmapped mounts work where --userns needs them), networking, the default rootfs
and the state directories. The first thing to run when something is wrong.

Options:
${optionsHelp(OPTIONS)}

Examples:
  ctrexec info
  ctrexec info --format json
`;

/** Two columns as the other lines; each idmap check on a line of its own, with the reason when it fails. */
export function usernsLines(u: HostDiagnosis["userns"]): string[] {
  const kernel = u.supported
    ? `yes (up to ${u.maxUserNamespaces})`
    : `NO: ${u.maxUserNamespaces === null ? "the kernel has none" : "/proc/sys/user/max_user_namespaces is 0"} (--userns auto and --uidmap fail)`;
  const checks = u.idmap.map((c) => {
    const where = `${c.what} ${c.path}${c.probed === c.path ? "" : ` (not made yet: probed ${c.probed})`} (${c.fsType})`;
    return c.supported ? `yes on ${where}` : `NO on ${where}: ${c.errno}: ${c.reason}`;
  });
  return [`user namespaces:  ${kernel}`, ...checks.map((c, i) => `${i === 0 ? "idmapped mounts:" : ""}`.padEnd(18) + c)];
}

/** Rootless mode: the daemon, then one line per capability, as the user namespace lines are laid out. */
export function rootlessLines(r: NonNullable<HostDiagnosis["rootless"]>): string[] {
  const d = r.daemon;
  const head = d
    ? `yes: rootlesskit pid ${d.rootlesskitPid}, network ${d.network}${d.inside ? ", this process inside" : " (run, exec and prune re-enter its namespaces)"}`
    : "yes, but no daemon runs: ctrexec rootless start";
  const caps = r.capabilities.map((c) => `${c.works ? "yes" : "NO"}: ${c.what}${c.why ? ` (${c.why})` : ""}`);
  return [`rootless:         ${head}`, ...caps.map((c) => `${"".padEnd(18)}${c}`)];
}

export async function infoCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, OPTIONS, "info");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) {
    ctx.stdout.write(INFO_HELP);
    return 0;
  }
  if (p.rest.length) throw new InvalidArgumentError(`"ctrexec info" takes no arguments`, { field: "argv" });
  const fmt = p.values.get("format") ?? "text";
  if (fmt !== "text" && fmt !== "json") throw flagError("--format", fmt, "use text or json");

  await using client = openClient(ctx, true);
  const d = await diagnoseHost({ client, stateDir: ctx.root, fifoRoot: ctx.fifoRoot, ...shimLauncherFromEnv() });
  const report = { ctrexec: { version: VERSION, node: process.version }, ...d };
  if (fmt === "json") ctx.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  else {
    const c = d.containerd;
    const lines = [
      `ctrexec:          ${VERSION} (node ${process.version})`,
      c.reachable ? `containerd:       ${c.version} at ${c.address}` : `containerd:       NOT REACHABLE: ${c.error}`,
      `namespace:        ${d.namespace}`,
      `runtime:          ${d.runtime.name} (runc ${d.runtime.runc})`,
      `shim launcher:    ${d.runtime.shimLauncher ?? "none (containerd runs containerd-shim-runc-v2 for every task's start and delete)"}`,
      `snapshotters:     ${(c.reachable ? c.snapshotters : []).join(", ") || "?"}`,
      `cgroup:           v${d.cgroup.version}${d.cgroup.namespaces ? " with namespaces" : ""}`,
      `seccomp:          ${d.security.seccomp ? "yes" : "no"}`,
      `apparmor:         ${d.security.apparmor ? "yes" : "no"}`,
      `selinux:          ${d.security.selinux ? "yes" : "no"}`,
      ...(d.rootless
        ? rootlessLines(d.rootless)
        : [`rootless:         no (as an unprivileged user: ctrexec rootless start)`, ...usernsLines(d.userns)]),
      `network:          default ${d.network.default}; providers ${d.network.providers.join(", ")}`,
      `CNI plugins:      ${d.network.cniPluginDir ? `${d.network.cniPlugins.join(", ") || "none"} in ${d.network.cniPluginDir}` : "not installed"}`,
      `default rootfs:   ${d.defaultRootfs.path}${d.defaultRootfs.built ? "" : " (not built yet)"} (each run writes to its own overlay)`,
      `state dir:        ${d.stateDir}`,
      `FIFO root:        ${d.fifoRoot} (mkfifo: ${d.fifo})`,
      `kernel:           ${d.kernel} (${d.arch})`,
    ];
    ctx.stdout.write(`${lines.join("\n")}\n`);
  }
  return d.containerd.reachable ? 0 : EXIT_OWN_FAILURE;
}
