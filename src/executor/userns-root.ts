import { chmodSync, chownSync, mkdirSync, writeFileSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Mount } from "../containerd/types.js";
import { FailedPreconditionError } from "../errors.js";
import { mountAsIds, mountIdmapped, type UserNamespace } from "../fs/idmap.js";
import { mountAt, unmountDetached } from "../fs/mount.js";
import type { LocalMount } from "./local-mount.js";

/*
 * A run in a user namespace sees the same root as without one: files the image owns by root show as root, and
 * its root may write and chown anywhere in it. On disk nothing is chowned (that costs a copy per run, in
 * proportion to the image); instead the layers are idmapped mounts (mount_setattr(MOUNT_ATTR_IDMAP)), made in
 * the run dir from the run's user namespace, and an overlay joins them:
 *
 * - A shared tree (a directory root, the built-in rootfs): its idmapped bind, read-only, is the overlay's lower
 *   layer; the upper layer is the run's own, in its run dir, owned by the run's root. What the run writes
 *   stays there as the run's host ids and never reaches the shared tree.
 * - A tree of the run's own (a fresh snapshot: `MountRef.exclusive`): its lower layers idmapped read-only, and
 *   its upper and work dirs through an idmapped bind of their parent, so what the run writes is stored with
 *   the ids a run without a user namespace sees: a commit is an ordinary snapshot. overlayfs does its work in
 *   the upper layer with its mounter's credentials, and the kernel refuses to create files through an idmapped
 *   mount for an id it does not map (EOVERFLOW): so that overlay is mounted by a thread whose fsuid and fsgid
 *   are the run's root (mountAsIds), and the host's work in it (cwd, stubs) runs as that root too (withFsIds).
 *
 * overlayfs itself cannot be idmapped (EINVAL), hence the binds below it.
 */

/** The directory of the run dir that holds a user-namespaced run's root (and whose mode runc's way in needs). */
export const USERNS_ROOT_DIR = "userns-root";

/** The run's user namespace, as prepare needs it: its fd, and its root's host ids. */
export interface RunUserNamespace {
  userns: UserNamespace;
  hostRoot: { uid: number; gid: number };
}

/** A mount made here, undone in reverse order of making. */
class Mounted {
  readonly #targets: string[] = [];
  add(target: string): void {
    this.#targets.push(target);
  }
  async unmount(): Promise<void> {
    let failure: unknown;
    for (const t of this.#targets.reverse()) await unmountDetached(t).catch((err: unknown) => (failure ??= err));
    this.#targets.length = 0;
    if (failure !== undefined) throw failure;
  }
}

/** Splits an overlay's options into its layers and the rest. */
function overlayLayers(options: readonly string[]): { lower: string[]; upper?: string; work?: string; rest: string[] } {
  const out: { lower: string[]; upper?: string; work?: string; rest: string[] } = { lower: [], rest: [] };
  for (const o of options) {
    if (o.startsWith("lowerdir=")) out.lower = o.slice("lowerdir=".length).split(":");
    else if (o.startsWith("upperdir=")) out.upper = o.slice("upperdir=".length);
    else if (o.startsWith("workdir=")) out.work = o.slice("workdir=".length);
    else out.rest.push(o);
  }
  return out;
}

const isBind = (m: Mount) => m.type === "bind" || m.type === "rbind";
const isReadonly = (m: Mount) => m.options.includes("ro");

/** Kernel page for mount options, less what a run dir path and the other options take. */
const MAX_OPTIONS = 4096 - 256;

/**
 * Mounts `mounts` (a root or an extra mount, containerd's form) for a run in `ns` at `<dir>/root`, as the
 * container must see it; `dir` is a fresh directory of the run dir. `forRunc`: the root, which runc mounts by
 * its path from inside the user namespace: `dir` lets the run's root group through, and nobody else (until the
 * task is made: closeRootDir). `readonly`: read-only on the host already, whatever the mounts say, so that the
 * container cannot remount it writable (the kernel locks a flag the mount had when it was passed in; one runc
 * adds inside is not locked). Returns where it is and how to undo it.
 */
export async function mountForUserNamespace(
  mounts: readonly Mount[],
  exclusive: boolean,
  dir: string,
  ns: RunUserNamespace,
  options: { forRunc?: boolean; readonly?: boolean } = {},
): Promise<LocalMount> {
  const only = mounts.length === 1 ? mounts[0]! : undefined;
  if (!only || !(isBind(only) || only.type === "overlay")) {
    throw new FailedPreconditionError(
      `a mount of ${mounts.map((m) => m.type).join("+") || "nothing"} cannot be given to a user namespace: ctrexec idmaps bind and overlay mounts only (use the overlayfs or native snapshotter, or userns "host")`,
    );
  }
  mkdirSync(dir, { mode: 0o700 });
  if (options.forRunc) {
    chownSync(dir, 0, ns.hostRoot.gid);
    chmodSync(dir, 0o710);
  }
  const mounted = new Mounted();
  const root = join(dir, "root");
  try {
    if (isBind(only)) await bindView(only, exclusive, options.readonly === true, dir, root, ns, mounted);
    else await overlayView(only, options.readonly === true, dir, root, ns, mounted);
  } catch (err) {
    await mounted.unmount().catch(() => {});
    throw err;
  }
  return { path: root, inPlace: false, unmount: () => mounted.unmount() };
}

async function bindView(m: Mount, exclusive: boolean, ro: boolean, dir: string, root: string, ns: RunUserNamespace, mounted: Mounted): Promise<void> {
  const readonly = ro || isReadonly(m);
  if (exclusive || readonly) {
    // The run's own tree (or one nobody writes through this run): the idmapped bind is the root itself.
    mkdirSync(root);
    await mountIdmapped(ns.userns, m.source, root, { readonly });
    mounted.add(root);
    return;
  }
  const lower = join(dir, "lower");
  mkdirSync(lower);
  await mountIdmapped(ns.userns, m.source, lower, { readonly: true });
  mounted.add(lower);
  const upper = join(dir, "upper");
  const work = join(dir, "work");
  mkdirSync(upper, { mode: 0o755 });
  mkdirSync(work, { mode: 0o700 });
  // The upper layer's root is the root dir the container sees: its owner is the container's root.
  chownSync(upper, ns.hostRoot.uid, ns.hostRoot.gid);
  mkdirSync(root);
  await mountAt({ type: "overlay", source: "overlay", options: [`lowerdir=${lower}`, `upperdir=${upper}`, `workdir=${work}`] }, root);
  mounted.add(root);
}

async function overlayView(m: Mount, readonly: boolean, dir: string, root: string, ns: RunUserNamespace, mounted: Mounted): Promise<void> {
  const layers = overlayLayers(m.options);
  if (layers.lower.length === 0) throw new FailedPreconditionError("an overlay mount without lowerdir cannot be given to a user namespace");
  if ((layers.upper === undefined) !== (layers.work === undefined)) {
    throw new FailedPreconditionError("an overlay mount needs both upperdir and workdir, or neither");
  }
  const lowers: string[] = [];
  for (const [i, source] of layers.lower.entries()) {
    const target = join(dir, i.toString(36));
    mkdirSync(target);
    await mountIdmapped(ns.userns, source, target, { readonly: true });
    mounted.add(target);
    lowers.push(target);
  }
  const options = [`lowerdir=${lowers.join(":")}`];
  if (layers.upper !== undefined && layers.work !== undefined) {
    // One idmapped bind for both: overlayfs needs its upper and work dirs on one mount.
    const parent = dirname(layers.upper);
    if (dirname(layers.work) !== parent) {
      throw new FailedPreconditionError(
        `overlay upperdir ${layers.upper} and workdir ${layers.work} are not in one directory: they cannot be idmapped as one mount`,
      );
    }
    const rw = join(dir, "rw");
    mkdirSync(rw);
    await mountIdmapped(ns.userns, parent, rw, {});
    mounted.add(rw);
    options.push(`upperdir=${join(rw, basename(layers.upper))}`, `workdir=${join(rw, basename(layers.work))}`);
  }
  options.push(...layers.rest.filter((o) => !(readonly && o === "rw")));
  if (readonly && !options.includes("ro")) options.push("ro");
  if (options.reduce((n, o) => n + o.length + 1, 0) > MAX_OPTIONS) {
    throw new FailedPreconditionError(
      `the image has too many layers (${layers.lower.length}) for an overlay of idmapped layers in the state dir ${dir}: use a shorter state dir path, or userns "host"`,
    );
  }
  mkdirSync(root);
  await mountAsIds(ns.hostRoot, { type: "overlay", source: "overlay", options }, root);
  mounted.add(root);
}

/**
 * A host file (resolv.conf, hosts) for a bind into a user-namespaced container, idmapped read-only in `dir` so
 * that it shows with its host owner (root) inside, as without a user namespace.
 */
export async function idmappedFile(
  source: string,
  dir: string,
  name: string,
  ns: RunUserNamespace,
  mounted: { add(target: string): void },
): Promise<string> {
  const target = join(dir, name);
  writeFileSync(target, "", { mode: 0o600, flag: "wx" });
  await mountIdmapped(ns.userns, source, target, { readonly: true });
  mounted.add(target);
  return target;
}

export { Mounted };

/**
 * Once runc has mounted the root (the task exists), its directory in the run dir is closed again to all but
 * host root: the container has its root, and no host account of the range's gid gets a way in.
 */
export function closeRootDir(dir: string): void {
  chmodSync(dir, 0o700);
}
