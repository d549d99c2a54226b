import {
  bindMountable,
  type ContainerdClient,
  type HostIP,
  InvalidArgumentError,
  imageMountable,
  type LinuxResources,
  type MountSpec,
  NotFoundError,
  type ProcessMeta,
  type PullPolicy,
  parseReference,
  type RootSpec,
  resolveImage,
  snapshotMountable,
  tmpfsMountable,
  withImageDefaults,
} from "../../index.js";
import { type OptionSpec, optionsHelp, type Parsed, parseOptions } from "../args.js";
import { type Context, contextFrom, GLOBAL_OPTIONS, openExecutor } from "../context.js";
import {
  envFromFlags,
  flagError,
  type MountFlag,
  parseAddHost,
  parseCpus,
  parseExitCode,
  parseLabel,
  parseMount,
  parseSize,
  parseTmpfs,
  parseUlimit,
  parseUserns,
  parseVolume,
} from "../flags.js";
import { withPull } from "../pulling.js";
import { withProcessSession } from "../session.js";

const OPTIONS: OptionSpec[] = [
  { name: "rootfs", kind: "value", arg: "DIR", help: "root filesystem: a host directory (default: the built-in busybox rootfs)" },
  { name: "image", kind: "value", arg: "REF", help: "root filesystem: an image, pulled if missing (its env, cwd, user, cmd apply)" },
  { name: "pull", kind: "value", arg: "POLICY", help: "with --image: missing (default), always or never pull it first" },
  { name: "quiet", short: "q", kind: "flag", help: "with --image: print nothing while pulling it" },
  { name: "snapshot", kind: "value", arg: "NAME", help: "root filesystem: a committed snapshot (e.g. an earlier --commit)" },
  { name: "commit", kind: "value", arg: "NAME", help: "with --image or --snapshot: keep the run's changes as snapshot NAME if it succeeds" },
  { name: "commit-on-failure", kind: "flag", help: "with --commit: commit a failed run's changes too (for debugging)" },
  { name: "snapshotter", kind: "value", arg: "NAME", help: "containerd snapshotter for --image/--snapshot (default overlayfs)" },
  { name: "id", kind: "value", arg: "ID", help: "container id (default: generated)" },
  { name: "rm", kind: "flag", help: "accepted for docker compatibility: runs are always removed" },
  {
    name: "mount",
    kind: "list",
    arg: "SPEC",
    help: "type=bind,source=S,target=T[,readonly][,idmap] or type=tmpfs,target=T[,tmpfs-size=64m]",
  },
  {
    name: "volume",
    short: "v",
    kind: "list",
    arg: "SRC:DST[:OPTS]",
    help: "bind-mount a host path; OPTS: ro or rw, and idmap (in a user namespace: its root is host root there)",
  },
  { name: "tmpfs", kind: "list", arg: "DST[:size=N]", help: "mount a tmpfs" },
  { name: "network", kind: "value", arg: "MODE", help: "host, none or bridge (default: bridge when set up, else host)" },
  { name: "user", short: "u", kind: "value", arg: "USER", help: "user[:group] or uid[:gid], looked up in the rootfs" },
  { name: "workdir", short: "w", kind: "value", arg: "DIR", help: "working directory, created and owned by the user" },
  { name: "env", short: "e", kind: "list", arg: "K=V", help: "set a variable; a bare K copies ctrexec's value" },
  { name: "env-file", kind: "list", arg: "FILE", help: "read variables from a file (K=V lines, # comments)" },
  { name: "hostname", short: "h", kind: "value", arg: "NAME", help: "container hostname (default: ctrexec)" },
  { name: "add-host", kind: "list", arg: "NAME:IP", help: "add an /etc/hosts line (IPv6 in brackets; host-gateway)" },
  { name: "dns", kind: "list", arg: "IP", help: "nameserver for /etc/resolv.conf" },
  { name: "dns-search", kind: "list", arg: "DOMAIN", help: "search domain for /etc/resolv.conf" },
  { name: "dns-option", kind: "list", arg: "OPT", help: "resolver option for /etc/resolv.conf" },
  { name: "read-only", kind: "flag", help: "mount the root filesystem read-only" },
  { name: "tty", short: "t", kind: "flag", help: "allocate a pseudo-terminal" },
  { name: "interactive", short: "i", kind: "flag", help: "keep stdin open and pass it to the process" },
  { name: "ulimit", kind: "list", arg: "NAME=SOFT[:HARD]", help: "resource limit, e.g. nofile=1024:2048" },
  { name: "cgroup-parent", kind: "value", arg: "PATH", help: "parent cgroup" },
  { name: "memory", short: "m", kind: "value", arg: "SIZE", help: "memory limit, e.g. 512m" },
  { name: "cpus", kind: "value", arg: "N", help: "CPU quota, e.g. 1.5" },
  { name: "cpuset-cpus", kind: "value", arg: "LIST", help: "CPUs allowed, e.g. 0-1" },
  { name: "privileged", kind: "flag", help: "insecure mode: all capabilities, no seccomp, all devices" },
  {
    name: "userns",
    kind: "value",
    arg: "MODE",
    help: "auto: root inside is an unused 65536-id range of the host, not root; host: none (default)",
  },
  { name: "uidmap", kind: "list", arg: "C:H:N", help: "a user namespace: uids C.. inside are H.. on the host, N of them (repeatable)" },
  { name: "gidmap", kind: "list", arg: "C:H:N", help: "the same for gids (either flag alone serves for both)" },
  { name: "valid-exit-code", kind: "list", arg: "N", help: "an exit code that counts as success (repeatable; default 0)" },
  { name: "label", short: "l", kind: "list", arg: "K=V", help: "label on the container" },
  ...GLOBAL_OPTIONS,
];

export const RUN_HELP = `Usage: ctrexec run [OPTIONS] [--] COMMAND [ARG...]

Run a command in a new container and remove it afterwards. Options end at the first
argument that is not an option: in \`ctrexec run ls -l\`, -l goes to ls.

Options:
${optionsHelp(OPTIONS)}

Exit status: the command's (128+n when killed by signal n); 125 when ctrexec itself
failed; 126 when the command cannot be executed; 127 when it was not found.

Examples:
  ctrexec run -- sh -c 'echo hello from ctrexec; id'
  ctrexec run --image alpine:3 --commit step1 -- sh -c 'apk add make'
  ctrexec run --image 127.0.0.1:5000/tools/build:1 --pull always make check
  ctrexec run --snapshot step1 make --version
  ctrexec run --rootfs /srv/rootfs -u user -w /work -e CI=1 make test
  echo hi | ctrexec run -i cat
  ctrexec run -t -i sh
  ctrexec run --network none --memory 256m --tmpfs /tmp:size=64m -- ./build.sh
  ctrexec run --userns auto --image alpine:3 -- sh -c 'id; cat /proc/self/uid_map'
  ctrexec run --uidmap 0:300000:65536 -v /srv/cache:/cache:idmap make
`;

function toMountSpec(m: MountFlag): MountSpec {
  if (m.type === "tmpfs") return { source: tmpfsMountable(m.size === undefined ? {} : { size: m.size }), dest: m.target, readonly: m.readonly };
  const spec: MountSpec = { source: bindMountable(m.source), dest: m.target, readonly: m.readonly };
  if (m.idmap) spec.idmap = true;
  return spec;
}

/** An idmapped bind means something only in a user namespace; without one, asking for it is a mistake to report. */
function checkIdmapNeedsUserns(flag: string, mounts: readonly MountFlag[], userns: ProcessMeta["userns"]): void {
  const idmapped = mounts.find((m) => m.type === "bind" && m.idmap);
  if (idmapped && (userns === undefined || userns === "host")) {
    throw new InvalidArgumentError(
      `${flag} ${idmapped.target} with idmap needs a user namespace: add --userns auto or --uidmap (without one, its files show their host owners anyway)`,
      { field: flag },
    );
  }
}

function resourcesFrom(p: Parsed): LinuxResources | undefined {
  const r: LinuxResources = {};
  const memory = p.values.get("memory");
  if (memory !== undefined) r.memory = parseSize("--memory", memory);
  const cpus = p.values.get("cpus");
  if (cpus !== undefined) Object.assign(r, parseCpus(cpus));
  const cpuset = p.values.get("cpuset-cpus");
  if (cpuset !== undefined) {
    if (!/^\d+(-\d+)?(,\d+(-\d+)?)*$/.test(cpuset)) throw flagError("--cpuset-cpus", cpuset, "expected a list like 0-2,4");
    r.cpusetCpus = cpuset;
  }
  return Object.keys(r).length ? r : undefined;
}

/** `host-gateway` stays as it is: the executor replaces it with the host's address on the run's network. */
function hostsFrom(p: Parsed): HostIP[] {
  return (p.lists.get("add-host") ?? []).map(parseAddHost);
}

/** Builds the run from the command line; every flag problem is an InvalidArgumentError naming the flag. */
export async function buildRun(argv: string[], parent: Context) {
  const p = parseOptions(argv, OPTIONS, "run");
  const ctx = contextFrom(p, parent);
  if (p.flags.has("help")) return { help: true as const, ctx };
  const rootFlags = ["rootfs", "image", "snapshot"].filter((f) => p.values.has(f));
  if (rootFlags.length > 1)
    throw new InvalidArgumentError(`--${rootFlags.join(" and --")} cannot be used together: pick one root`, { field: `--${rootFlags[1]}` });
  const image = p.values.get("image");
  const snapshot = p.values.get("snapshot");
  const commit = p.values.get("commit");
  if (commit !== undefined && image === undefined && snapshot === undefined) {
    throw flagError("--commit", commit, "needs --image or --snapshot (a directory root has no snapshot to commit)");
  }
  const pullFlag = p.values.get("pull");
  if (pullFlag !== undefined && image === undefined) throw flagError("--pull", pullFlag, "needs --image (only an image is pulled)");
  const pull = parsePullPolicy(pullFlag ?? "missing");
  const commitOnFailure = p.flags.has("commit-on-failure");
  if (commitOnFailure && commit === undefined) {
    throw new InvalidArgumentError("--commit-on-failure needs --commit NAME", { field: "--commit-on-failure" });
  }
  if (p.rest.length === 0 && image === undefined) {
    throw new InvalidArgumentError(`"ctrexec run" requires a command to run. See 'ctrexec run --help'.`, { field: "argv" });
  }
  const network = p.values.get("network");
  const meta: ProcessMeta = {
    args: p.rest,
    env: await envFromFlags(p.lists.get("env-file") ?? [], p.lists.get("env") ?? []),
    tty: p.flags.has("tty"),
    readonlyRootfs: p.flags.has("read-only"),
    security: p.flags.has("privileged") ? "insecure" : "sandbox",
    extraHosts: hostsFrom(p),
    ulimits: (p.lists.get("ulimit") ?? []).map(parseUlimit),
    validExitCodes: (p.lists.get("valid-exit-code") ?? []).map(parseExitCode),
  };
  const set = <K extends keyof ProcessMeta>(k: K, v: ProcessMeta[K] | undefined) => {
    if (v !== undefined) meta[k] = v;
  };
  set("network", network);
  set("user", p.values.get("user"));
  set("cwd", p.values.get("workdir"));
  set("hostname", p.values.get("hostname"));
  set("cgroupParent", p.values.get("cgroup-parent"));
  set("resources", resourcesFrom(p));
  set("userns", parseUserns(p.values.get("userns"), p.lists.get("uidmap") ?? [], p.lists.get("gidmap") ?? []));
  const mountFlags = (p.lists.get("mount") ?? []).map(parseMount);
  const volumes = (p.lists.get("volume") ?? []).map(parseVolume);
  checkIdmapNeedsUserns("--mount", mountFlags, meta.userns);
  checkIdmapNeedsUserns("--volume", volumes, meta.userns);
  const mounts = [...mountFlags, ...volumes, ...(p.lists.get("tmpfs") ?? []).map(parseTmpfs)].map(toMountSpec);
  const rootfs = p.values.get("rootfs");
  if (rootfs !== undefined && !rootfs.startsWith("/")) throw flagError("--rootfs", rootfs, "must be an absolute path");
  const root: RootSpec | undefined = rootfs ? { source: bindMountable(rootfs) } : undefined;
  const labels = Object.fromEntries((p.lists.get("label") ?? []).map(parseLabel));
  const dns = {
    nameservers: p.lists.get("dns") ?? [],
    searchDomains: p.lists.get("dns-search") ?? [],
    options: p.lists.get("dns-option") ?? [],
  };
  const snapshotter = p.values.get("snapshotter");
  const from = image !== undefined ? { image, pull } : snapshot !== undefined ? { snapshot } : {};
  return {
    help: false as const,
    ctx,
    meta,
    mounts,
    root,
    ...from,
    snapshotOptions: {
      ...(commit !== undefined ? { commit } : {}),
      ...(commitOnFailure ? { commitOnFailure } : {}),
      ...(snapshotter !== undefined ? { snapshotter } : {}),
    },
    labels,
    dns,
    id: p.values.get("id"),
    interactive: p.flags.has("interactive"),
    quiet: p.flags.has("quiet"),
  };
}

const PULL_POLICIES: readonly string[] = ["missing", "always", "never"] satisfies PullPolicy[];

/** docker's --pull: missing, always or never. */
export function parsePullPolicy(value: string): PullPolicy {
  if (!PULL_POLICIES.includes(value)) throw flagError("--pull", value, "use missing, always or never");
  return value as PullPolicy;
}

/** Whether the store has no image under `ref`, nor under its normalized name (not: the image lacks this platform). */
async function absent(client: ContainerdClient, ref: string): Promise<boolean> {
  let names = [ref];
  try {
    names = [...new Set([ref, parseReference(ref).name])];
  } catch {
    // Not a docker reference: the store may still hold an image of that name (imported under any name).
  }
  for (const name of names) {
    const found = await client.images.get(name).then(
      () => true,
      () => false,
    );
    if (found) return false;
  }
  return true;
}

export async function runCommand(argv: string[], parent: Context): Promise<number> {
  const r = await buildRun(argv, parent);
  if (r.help) {
    r.ctx.stdout.write(RUN_HELP);
    return 0;
  }
  const executor = await openExecutor(r.ctx, { dns: r.dns });
  let root = r.root;
  let meta = r.meta;
  try {
    if (r.image !== undefined) {
      const ref = r.image;
      const pull = r.pull ?? "missing";
      const snapshotter = r.snapshotOptions.snapshotter;
      const image = await withPull(
        r.ctx,
        { quiet: r.quiet, header: `Pulling ${ref}`, ...(snapshotter !== undefined ? { snapshotter } : {}) },
        (options) => resolveImage(executor.client, ref, { ...options, pull }),
      ).catch(async (err: unknown) => {
        if (pull === "never" && err instanceof NotFoundError && (await absent(executor.client, ref))) {
          throw new NotFoundError(
            `image ${ref} is not in namespace ${executor.client.namespace} and --pull never forbids pulling it: run \`ctrexec pull ${ref}\` first, or use --pull missing`,
            { cause: err },
          );
        }
        throw err;
      });
      meta = withImageDefaults(meta, image.imageConfig);
      root = { source: imageMountable(executor.client, image, r.snapshotOptions) };
    } else if (r.snapshot !== undefined) {
      root = { source: snapshotMountable(executor.client, r.snapshot, r.snapshotOptions) };
    }
  } catch (err) {
    await executor.close();
    throw err;
  }
  return withProcessSession(r.ctx, executor, meta, r.interactive, async (process, signal) => {
    const result = await executor.run({
      ...(r.id ? { id: r.id } : {}),
      ...(root ? { root } : {}),
      mounts: r.mounts,
      labels: r.labels,
      signal,
      process,
    });
    return result.exitCode;
  });
}
