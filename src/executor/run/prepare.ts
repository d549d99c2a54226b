import { join } from "node:path";
import { CanceledError, InvalidArgumentError } from "../../errors.js";
import { ensureCwd, ensureCwdSync } from "../../fs/cwd.js";
import { withFsIds } from "../../fs/idmap.js";
import type { NetworkHandle } from "../../network/types.js";
import { DEFAULT_HOSTNAME, normalizeExtraHosts } from "../../oci/hosts.js";
import { generateSpec, type SpecInput, validateMountStrings } from "../../oci/spec.js";
import type { Mount as OciMount } from "../../oci/types.js";
import { getUser, type ResolvedUser } from "../../oci/user.js";
import type { IdMapping } from "../../oci/userns.js";
import { ensureDefaultRootfs } from "../../rootfs/default-rootfs.js";
import type { ExecutorContext } from "../context.js";
import { mountDefaultRoot } from "../default-root.js";
import { type LocalMount, mountLocally, tooLongForTheKernel } from "../local-mount.js";
import { MountStubsCleaner } from "../mount-stubs.js";
import { enterRoot } from "../root-stubs.js";
import { checkRootlessRun } from "../rootless-mode.js";
import { createRunDir, removeRunDir } from "../run-dirs.js";
import { mountSubPath } from "../selector-mount.js";
import type { MountRef, MountSpec, RunRequest } from "../types.js";
import { idmappedFile, Mounted, mountForUserNamespace, USERNS_ROOT_DIR } from "../userns-root.js";
import { type RunDisposal, retireRunDirLater } from "./disposal.js";
import { checkUserns, hostIds, type PreparedUserns, prepareUserns, usernsMode } from "./run-userns.js";

/** Whether the run's task is known not to exist (none made yet, or deleted): while it may, its container may still use what the run holds. */
export interface TaskPresence {
  gone: boolean;
}

/** The spec inputs known before anything is created. */
export type SpecBase = Omit<SpecInput, "user" | "network">;

/** What prepareRun made for the container: its root, mounts, user, network and generated files. */
export interface PreparedRun {
  runDir: string;
  /** No root given: the built-in one, through an overlay in the run dir (default-root.ts). */
  defaultRoot: boolean;
  rootfs: string;
  mounts: OciMount[];
  user: ResolvedUser;
  network: NetworkHandle;
  resolvConfPath: string;
  hostsPath: string;
  /** The run's user namespace maps; undefined for the host's. */
  userns: IdMapping | undefined;
}

/** Between the steps before the start: a cancel is acted on once what a step made is registered for release. */
export function throwIfCanceled(id: string, signal: AbortSignal): void {
  if (signal.aborted) throw new CanceledError(`run ${id} was canceled before it started`, { cause: signal.reason });
}

/**
 * Checks everything about a run request that can be checked without side effects, so that bad input fails
 * before anything is created; returns the spec inputs known so far.
 */
export function checkRunRequest(ctx: ExecutorContext, id: string, req: RunRequest): SpecBase {
  const meta = req.process.meta;
  const o = ctx.options;
  // host-gateway is resolved once the network exists; the rest is checked now.
  normalizeExtraHosts((meta.extraHosts ?? []).filter((h) => h.ip !== "host-gateway"));
  const base: SpecBase = {
    id,
    namespace: ctx.client.namespace,
    args: meta.args ?? [],
    env: meta.env,
    cwd: meta.cwd,
    hostname: meta.hostname || DEFAULT_HOSTNAME,
    terminal: meta.tty,
    consoleSize: meta.consoleSize,
    readonlyRootfs: meta.readonlyRootfs || req.root?.readonly,
    ulimits: meta.ulimits,
    cgroupParent: meta.cgroupParent || o.cgroupParent,
    resources: meta.resources,
    security: meta.security,
    apparmorProfile: o.apparmorProfile,
    selinux: o.selinux,
    traceSocket: o.traceSocket,
    rootless: o.rootless,
    mounts: (req.mounts ?? []).map((m) => ({ destination: m.dest, type: "bind" })),
  };
  if (o.rootless) {
    const network = meta.network === "default" ? undefined : meta.network;
    checkRootlessRun({ resources: meta.resources, cgroupParent: base.cgroupParent, network });
  }
  const userns = checkUserns(ctx, usernsMode(ctx, meta.userns));
  generateSpec({ ...base, userns, user: { uid: 0, gid: 0, additionalGids: [] } }, ctx.host);
  for (const m of req.mounts ?? []) {
    if (m.idmap && !userns) {
      throw new InvalidArgumentError(`mount ${JSON.stringify(m.dest)}: idmap applies only to a run in a user namespace`, { field: "mounts" });
    }
  }
  // A C string ends at a NUL: the sub-path opened would not be the one asked for.
  for (const m of req.mounts ?? []) {
    if (m.selector?.includes("\0"))
      throw new InvalidArgumentError(`mount ${JSON.stringify(m.dest)}: its selector must not contain NUL bytes`, { field: "mounts" });
  }
  for (const [k, v] of Object.entries(req.labels ?? {})) {
    if (k.startsWith("ctrexec.")) throw new InvalidArgumentError(`label ${k}: the "ctrexec." prefix is reserved`, { field: "labels" });
    if (k === "" || k.length + v.length > 4096) {
      throw new InvalidArgumentError(`label ${JSON.stringify(k.slice(0, 50))}: keys must be non-empty and key+value at most 4096 bytes`, {
        field: "labels",
      });
    }
  }
  return base;
}

/**
 * Prepares the container's environment on the host, each acquire's release registered right after it: the run
 * dir, the network, the generated files, the root mount and its mount-point stubs, the user and working
 * directory inside the root, and the extra mounts.
 */
export async function prepareRun(
  ctx: ExecutorContext,
  id: string,
  req: RunRequest,
  base: SpecBase,
  disposal: RunDisposal,
  task: TaskPresence,
  signal: AbortSignal,
  onRoot: (rootfs: string) => void,
): Promise<PreparedRun> {
  const meta = req.process.meta;
  const defaultRoot = req.root === undefined;
  const provider = await ctx.networks.provider(meta.network);

  const mode = usernsMode(ctx, meta.userns);
  const runDir = await createRunDir(ctx.root, ctx.client.namespace, id);
  disposal.defer("remove run dir", {
    // A task that may live on (containerd away, a kill that timed out) may still write into the run dir (the
    // default root's upper layer): it stays until the background retry has deleted that task, or for prune.
    now: () => (task.gone ? removeRunDir(runDir) : ctx.retirements.whenOrphanGone(id, () => removeRunDir(runDir))),
    // The default root's overlay, and a user namespace's idmapped mounts, are still in it.
    background: () => retireRunDirLater(ctx.retirements, runDir, defaultRoot || mode !== "host"),
  });
  const ns = await prepareUserns(ctx, id, mode, runDir, disposal, task);

  const hostname = base.hostname ?? DEFAULT_HOSTNAME;
  const network = await provider.create({ id, hostname, signal, privileged: meta.security === "insecure" });
  // Released after the task's deletion: the namespace may serve another run only if nothing of this one is left in it.
  disposal.defer("close network namespace", () => network.close({ reusable: disposal.retiring || task.gone }));
  if (network.hostNetwork) ctx.logger.info("enabling HostNetworking", { id });
  const wantsGateway = (meta.extraHosts ?? []).some((h) => h.ip === "host-gateway");
  if (wantsGateway && !network.gateway) {
    throw new InvalidArgumentError(`host-gateway is not available with network ${meta.network ?? "default"}`, { field: "extraHosts" });
  }
  const extraHosts = normalizeExtraHosts((meta.extraHosts ?? []).map((h) => (h.ip === "host-gateway" ? { host: h.host, ip: network.gateway! } : h)));
  throwIfCanceled(id, signal);
  let resolvConfPath = await ctx.env.resolvConf(network.hostNetwork);
  const hosts = await ctx.env.hosts(hostname, extraHosts, runDir);
  disposal.defer("remove hosts file", () => hosts.release());
  let hostsPath = hosts.path;
  if (ns) {
    // Shown as owned by root inside, as without a user namespace (root's host ids are outside its maps).
    const files = new Mounted();
    disposal.defer("unmount generated files", { now: () => files.unmount(), background: undefined });
    resolvConfPath = await idmappedFile(resolvConfPath, runDir, "resolv.conf", ns, files);
    hostsPath = await idmappedFile(hostsPath, runDir, "hosts", ns, files);
  }

  const root = await mountRoot(ctx, req, runDir, disposal, ns);
  const local = root.local;
  onRoot(local.path);
  // The host's work in a user namespace's root is done as that root (userns-root.ts).
  const asRoot = <T>(fn: () => T): T => (ns ? withFsIds(ns.hostRoot, fn) : fn());
  // The default root's stubs are in its run's own upper layer, and go with it; so are those of a shared root in
  // a user namespace (its overlay's upper layer is the run's).
  if (!defaultRoot && (!ns || root.exclusive)) {
    const dests = (req.mounts ?? []).map((m) => m.dest);
    const recursive = meta.removeMountStubsRecursive ?? true;
    const stubs = asRoot(() => MountStubsCleaner.prepareSync(local.path, dests, { recursive, logger: ctx.logger }));
    if (ns) {
      // A snapshot of the run's own: no other run shares its mount points.
      disposal.defer("remove mount stubs", () => asRoot(() => stubs.cleanSync()));
    } else {
      // Concurrent runs on one writable root share its mount points, across executors and processes too: stubs
      // are removed when the last run on that root is done (root-stubs.ts).
      const rootEntry = enterRoot(ctx.root, local.path, stubs, ctx.logger);
      if (rootEntry) disposal.defer("remove mount stubs", () => rootEntry.leave());
    }
  }
  throwIfCanceled(id, signal);

  const user = asRoot(() => getUser(local.path, meta.user ?? ""));
  if (ns) {
    const owner = hostIds(ns, user);
    asRoot(() => ensureCwdSync(local.path, meta.cwd || "/", owner.uid, owner.gid, undefined, ns.hostRoot.uid));
  } else {
    await ensureCwd(local.path, meta.cwd || "/", user.uid, user.gid);
  }
  const mounts = await mountExtras(ctx, req, runDir, disposal, ns);
  ns?.userns.close(); // every idmapped mount is made: they hold the namespace now
  throwIfCanceled(id, signal);
  return {
    runDir,
    defaultRoot,
    rootfs: local.path,
    mounts,
    user,
    network,
    resolvConfPath,
    hostsPath,
    userns: ns?.mapping,
  };
}

/**
 * The root, mounted on the host in the run dir: the caller's mountable, or the built-in rootfs under an
 * overlay; in a user namespace, through idmapped mounts (userns-root.ts).
 */
async function mountRoot(
  ctx: ExecutorContext,
  req: RunRequest,
  runDir: string,
  disposal: RunDisposal,
  ns: PreparedUserns | undefined,
): Promise<{ local: LocalMount; exclusive: boolean }> {
  if (!req.root) {
    const rootfs = await ensureDefaultRootfs(ctx.root);
    const local = ns
      ? await mountForUserNamespace([{ type: "bind", source: rootfs, options: ["rbind"] }], false, join(runDir, USERNS_ROOT_DIR), ns, {
          forRunc: true,
        })
      : await mountDefaultRoot(rootfs, runDir, ctx.logger);
    // Its overlay goes with the run dir, off the run's path, once the run was handed over.
    disposal.defer("unmount rootfs", { now: () => local.unmount(), background: undefined });
    return { local, exclusive: false };
  }
  const ref = await req.root.source.mount(false);
  disposal.defer("release root mount", (ctx) => ref.release(ctx), { failsRun: ref.keepsResult === true });
  validateMountStrings("/", ref.mounts);
  const exclusive = ref.exclusive === true;
  const local = ns
    ? await mountForUserNamespace(ref.mounts, exclusive, join(runDir, USERNS_ROOT_DIR), ns, { forRunc: true })
    : await mountLocally(ref.mounts, runDir);
  disposal.defer("unmount rootfs", () => local.unmount());
  return { local, exclusive };
}

/**
 * How an extra mount's source gets a user namespace's view: the run's own snapshot like a root (written with
 * ordinary ids), a host directory asked for with `idmap`, or as it is (files of ids outside the run's maps show
 * as nobody, and stay out of its reach).
 */
function usernsHandling(ns: PreparedUserns | undefined, m: MountSpec, ref: MountRef): "as-is" | "read-only" | "own" | "idmap" {
  if (!ns) return "as-is";
  if (ref.exclusive) return "own";
  const isBind = ref.mounts.length === 1 && ["bind", "rbind"].includes(ref.mounts[0]!.type);
  if (!m.idmap) {
    // Read-only on the host before runc passes it in, so that the kernel locks the flag: one runc sets inside is
    // the container's root's to undo (in a privileged run it may remount it writable).
    return m.readonly && isBind ? "read-only" : "as-is";
  }
  if (!isBind) throw new InvalidArgumentError(`mount ${JSON.stringify(m.dest)}: idmap applies to bind mounts only`, { field: "mounts" });
  return "idmap";
}

/** The extra mounts, as OCI mounts for the spec. */
async function mountExtras(
  ctx: ExecutorContext,
  req: RunRequest,
  runDir: string,
  disposal: RunDisposal,
  ns: PreparedUserns | undefined,
): Promise<OciMount[]> {
  const mounts: OciMount[] = [];
  for (const [i, m] of (req.mounts ?? []).entries()) {
    const ref = await m.source.mount(m.readonly ?? false);
    disposal.defer(`release mount ${m.dest}`, (rc) => ref.release(rc), { failsRun: ref.keepsResult === true });
    validateMountStrings(m.dest, ref.mounts);
    const selector = m.selector && m.selector !== "/" ? m.selector : undefined;
    const handling = usernsHandling(ns, m, ref);
    if (!selector && handling === "as-is" && !ref.mounts.some(tooLongForTheKernel)) {
      for (const cm of ref.mounts) mounts.push({ destination: m.dest, type: cm.type, source: cm.source, options: [...cm.options] });
      continue;
    }
    // Mounted on the host first, then bind-mounted in: a sub-path (selector) is resolved inside the mount
    // without following symlinks out, and an overlay whose options would not fit the kernel's page (long
    // lowerdir chains, §5.7) never reaches runc.
    const local =
      handling === "as-is"
        ? await mountLocally(ref.mounts, runDir)
        : handling === "read-only"
          ? await mountLocally(
              ref.mounts.map((cm) => ({ ...cm, options: [...cm.options.filter((o) => o !== "rw"), "ro"] })),
              runDir,
            )
          : // "idmap": the host directory itself, idmapped (the caller asked for writes to reach it).
            await mountForUserNamespace(ref.mounts, true, join(runDir, `userns-m${i}`), ns!, { readonly: m.readonly === true });
    disposal.defer(`unmount ${m.dest}`, () => local.unmount());
    let source = local.path;
    if (selector) {
      // Opened and checked once, mounted from its fd in the run dir: nothing can redirect it afterwards.
      source = await mountSubPath(local.path, selector, {
        dest: m.dest,
        readonly: m.readonly ?? false,
        runDir,
        stack: disposal.stack,
        logger: ctx.logger,
      });
    }
    mounts.push({ destination: m.dest, type: "bind", source, options: m.readonly ? ["rbind", "ro"] : ["rbind"] });
  }
  return mounts;
}
