import { execFile } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { promisify } from "node:util";
import { fifoImplementation } from "../../containerd/fifo.js";
import { DEFAULT_RUNTIME } from "../../containerd/run-task.js";
import { chooseShimLauncher } from "../../containerd/shim-launcher.js";
import { InvalidArgumentError } from "../../errors.js";
import { autoNetworkMode } from "../../network/auto.js";
import { detectHostFeatures } from "../../oci/host-features.js";
import { defaultRootfsPath } from "../../rootfs/default-rootfs.js";
import { type OptionSpec, optionsHelp, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openClient, shimLauncherFromEnv } from "../context.js";
import { flagError } from "../flags.js";
import { VERSION } from "../version.js";

const OPTIONS: OptionSpec[] = [{ name: "format", kind: "value", arg: "FORMAT", help: "text (default) or json" }, ...GLOBAL_OPTIONS];
export const INFO_HELP = `Usage: ctrexec info [--format json]

Show what ctrexec runs on: containerd, runtime, cgroups, security features, networking,
the default rootfs and the state directories. The first thing to run when something is wrong.

Options:
${optionsHelp(OPTIONS)}

Examples:
  ctrexec info
  ctrexec info --format json
`;

const CNI_DIRS = ["/usr/lib/cni", "/opt/cni/bin"];

async function runcVersion(): Promise<string> {
  try {
    const { stdout } = await promisify(execFile)("runc", ["--version"], { timeout: 5000 });
    return stdout.split("\n")[0]?.replace(/^runc version /, "") ?? "";
  } catch {
    return "not found";
  }
}

export async function infoCommand(argv: string[], parent: Context): Promise<number> {
  const p = parseOptions(argv, OPTIONS, "info");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) return void ctx.stdout.write(INFO_HELP), 0;
  if (p.rest.length) throw new InvalidArgumentError(`"ctrexec info" takes no arguments`, { field: "argv" });
  const fmt = p.values.get("format") ?? "text";
  if (fmt !== "text" && fmt !== "json") throw flagError("--format", fmt, "use text or json");

  await using client = openClient(ctx);
  let containerd: Record<string, unknown>;
  let ok = true;
  try {
    const v = await client.version();
    const plugins = await client.introspection.plugins([`type=="io.containerd.snapshotter.v1"`]).catch(() => []);
    containerd = {
      reachable: true,
      address: client.address,
      version: v.version,
      revision: v.revision,
      snapshotters: plugins.map((pl) => pl.id),
    };
  } catch (err) {
    ok = false;
    containerd = { reachable: false, address: client.address, error: (err as Error).message };
  }
  const host = detectHostFeatures();
  const cniDir = CNI_DIRS.find((d) => existsSync(d));
  const cniPlugins = cniDir ? readdirSync(cniDir).filter((f) => ["bridge", "host-local", "loopback", "firewall", "portmap"].includes(f)) : [];
  const rootfs = defaultRootfsPath(ctx.root);
  const report = {
    ctrexec: { version: VERSION, node: process.version },
    containerd,
    namespace: client.namespace,
    runtime: { name: DEFAULT_RUNTIME, runc: await runcVersion(), shimLauncher: chooseShimLauncher(shimLauncherFromEnv().shimLauncher, DEFAULT_RUNTIME, String(containerd["version"] ?? "")) ?? null },
    cgroup: { version: existsSync("/sys/fs/cgroup/cgroup.controllers") ? 2 : 1, namespaces: host.cgroupNamespaces },
    security: { seccomp: host.seccomp, apparmor: host.apparmor, selinux: host.selinux, userNamespace: host.inUserNamespace },
    network: { default: await autoNetworkMode(), providers: ["host", "none", "bridge"], cniPluginDir: cniDir ?? null, cniPlugins },
    defaultRootfs: { path: rootfs, built: existsSync(`${rootfs}/bin/busybox`) },
    stateDir: ctx.root,
    fifoRoot: ctx.fifoRoot,
    fifo: fifoImplementation(),
    kernel: host.kernelRelease,
    arch: host.arch,
  };
  if (fmt === "json") ctx.stdout.write(JSON.stringify(report, null, 2) + "\n");
  else {
    const c = report.containerd;
    const lines = [
      `ctrexec:          ${VERSION} (node ${process.version})`,
      c["reachable"]
        ? `containerd:       ${String(c["version"])} at ${String(c["address"])}`
        : `containerd:       NOT REACHABLE: ${String(c["error"])}`,
      `namespace:        ${report.namespace}`,
      `runtime:          ${report.runtime.name} (runc ${report.runtime.runc})`,
      `shim launcher:    ${report.runtime.shimLauncher ?? "none (containerd runs containerd-shim-runc-v2 for every task's start and delete)"}`,
      `snapshotters:     ${((c["snapshotters"] as string[] | undefined) ?? []).join(", ") || "?"}`,
      `cgroup:           v${report.cgroup.version}${report.cgroup.namespaces ? " with namespaces" : ""}`,
      `seccomp:          ${host.seccomp ? "yes" : "no"}`,
      `apparmor:         ${host.apparmor ? "yes" : "no"}`,
      `selinux:          ${host.selinux ? "yes" : "no"}`,
      `network:          default ${report.network.default}; providers ${report.network.providers.join(", ")}`,
      `CNI plugins:      ${cniDir ? `${cniPlugins.join(", ") || "none"} in ${cniDir}` : "not installed"}`,
      `default rootfs:   ${rootfs}${report.defaultRootfs.built ? "" : " (not built yet)"} (each run writes to its own overlay)`,
      `state dir:        ${ctx.root}`,
      `FIFO root:        ${ctx.fifoRoot} (mkfifo: ${report.fifo})`,
      `kernel:           ${host.kernelRelease} (${host.arch})`,
    ];
    ctx.stdout.write(lines.join("\n") + "\n");
  }
  return ok ? 0 : 125;
}
