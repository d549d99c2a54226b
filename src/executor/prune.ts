import { randomBytes } from "node:crypto";
import { existsSync, renameSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import type { ContainerdClient } from "../containerd/client.js";
import { CLEANUP_RPC_MS, deleteContainerRecord, deleteTask } from "../containerd/task-cleanup.js";
import { jsonAny, SPEC_TYPE_URL } from "../containerd/types.js";
import { AlreadyExistsError, NotFoundError, type PruneFailure, PruneIncompleteError, UnknownError } from "../errors.js";
import { removeTree } from "../fs/remove-tree.js";
import { pruneNetns } from "../network/bridge.js";
import { defaultSpec } from "../oci/defaults.js";
import { endedPidNamespaces, rootlessLayout } from "../rootless/layout.js";
import { type Logger, silentLogger } from "../util/logger.js";
import type { EndedPidNamespaces } from "../util/owner.js";
import { inUserNamespace, isHostRoot } from "../util/user-namespace.js";
import { LABEL, ownerAlive, ownerId } from "./labels.js";
import { bundleUsesSocket, findShims, isIdentifier, shimSocket, stopOrphanShim } from "./orphan-shims.js";
import { rootRegistriesDir, settleRootRegistry } from "./root-stubs.js";
import { fifoDir, readRunOwner, runEntryOwner, runsDir } from "./run-dirs.js";
import { HOST_RANGES_BASE, pruneRanges } from "./userns-ranges.js";

export interface PruneOptions {
  client: ContainerdClient;
  stateDir: string;
  fifoRoot: string;
  logger?: Logger;
  runtime?: string;
}

/**
 * Removes what runs of dead ctrexec processes left in this namespace: their tasks (resumed, killed, deleted),
 * containers, shims containerd forgot, network namespaces (bridge.ts's pruneNetns), FIFO directories, run dirs and local mounts, leases (and so active
 * snapshots), and tasks whose container record is gone but whose run dir says they were ours (reference:
 * containerd-from-node §8), and the mount stubs of roots whose last run died (these are per state dir, not
 * per namespace). Runs whose owner is alive, or lives on another host, are never touched. A run dir goes only
 * once its task is known to be gone: a container still running may be writing into it.
 *
 * Total: each thing is tried on its own, and one that fails (a run dir that cannot be removed, a task
 * containerd will not delete) is logged and does not keep prune from the rest. Returns what it removed, one
 * line each; when something was left, rejects after all the rest with a PruneIncompleteError that carries
 * those lines too.
 */
export async function prune(options: PruneOptions): Promise<string[]> {
  const { client } = options;
  const logger = options.logger ?? silentLogger;
  const ns = client.namespace;
  const removed: string[] = [];
  const failures: PruneFailure[] = [];
  /** Runs `fn`; a failure is logged and collected, and gives undefined. */
  async function attempt<T>(what: string, fn: () => Promise<T>): Promise<T | undefined> {
    try {
      return await fn();
    } catch (error) {
      logger.warn(`prune: ${what} failed; the rest goes on`, { error });
      failures.push({ what, error });
      return undefined;
    }
  }
  const fifos = fifoDir(options.fifoRoot, ns);
  const runs = runsDir(options.stateDir, ns);
  // In a rootless daemon, the runs of the user's earlier daemons are in pid namespaces /proc cannot show:
  // those that ended are known (rootless/layout.ts).
  const ended = inUserNamespace() ? endedPidNamespaces(rootlessLayout()) : undefined;

  const containers = await attempt("containers (listing them)", () => client.containers.list());
  const known = new Set((containers ?? []).map((c) => c.id));
  /** Ids of dead owners' containers: a shim left for one is that owner's. */
  const deadOwners = new Set<string>();
  /** Ids whose task could not be deleted (or whose shim not stopped): their run dirs stay (see above). */
  const taskNotGone = new Set<string>();
  /** Run dirs that container labels name, for dead owners' containers whose task is gone. */
  const labelledDirs: { id: string; dir: string }[] = [];
  for (const c of containers ?? []) {
    const owner = c.labels[LABEL.owner];
    if (!owner || ownerAlive(owner, ended) !== false) continue;
    deadOwners.add(c.id);
    // deleteTask returns true when the task is gone, and throws otherwise.
    if (!(await attempt(`task ${c.id}`, () => deleteTask(client, c.id, logger)))) {
      taskNotGone.add(c.id);
      continue; // its record stays (containerd would orphan the task), and so does its run dir
    }
    if ((await attempt(`container ${c.id}`, () => deleteContainerRecord(client, c.id).then(() => true))) === true) {
      known.delete(c.id);
      removed.push(`container ${c.id}`);
    }
    const runDir = runDirOf(runs, c.labels[LABEL.runDir]);
    if (runDir !== undefined) labelledDirs.push({ id: c.id, dir: runDir });
  }

  // Tasks without a container record (orphaned): ours if our run dir for that id has a dead owner.
  for (const t of (await attempt("tasks (listing them)", () => client.tasks.list())) ?? []) {
    if (known.has(t.id) || !isIdentifier(t.id)) continue;
    const owner = await readRunOwner(join(runs, t.id));
    if (!owner || ownerAlive(owner, ended) !== false) continue;
    const gone = await attempt(`orphaned task ${t.id}`, async () => {
      // containerd answers every Tasks call for an orphan with NOT_FOUND; a container record with the same id
      // makes the task reachable again.
      await client.containers.create({
        id: t.id,
        runtime: { name: options.runtime ?? "io.containerd.runc.v2" },
        spec: jsonAny(SPEC_TYPE_URL, defaultSpec(ns, t.id)),
        labels: { [LABEL.owner]: owner },
      });
      const deleted = await deleteTask(client, t.id, logger);
      await deleteContainerRecord(client, t.id);
      return deleted;
    });
    if (gone) removed.push(`orphaned task ${t.id}`);
    else taskNotGone.add(t.id);
  }

  // The run dirs there are, and whose: read before anything below removes one.
  const entries = await attempt(`run dirs in ${runs} (listing them)`, async () => {
    const names = await readdir(runs).catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return [] as string[];
      throw err;
    });
    return Promise.all(names.map(async (name) => ({ name, owner: await runEntryOwner(runs, name) })));
  });
  const deadRunIds = new Set((entries ?? []).filter((e) => e.owner !== undefined && ownerAlive(e.owner, ended) === false).map((e) => e.name));

  // Shims whose task containerd forgot (see orphan-shims.ts): only of ids known here to be a dead owner's.
  if (containers !== undefined) {
    const candidates = new Set([...deadOwners, ...deadRunIds]);
    const runtime = options.runtime ?? "io.containerd.runc.v2";
    const looked = await attempt("orphaned shims", () =>
      pruneOrphanShims(client, runtime, candidates, logger, removed, failures, taskNotGone).then(() => true),
    );
    // Not known whether one of them still has a shim (and a container): their run dirs stay.
    if (!looked) for (const id of candidates) taskNotGone.add(id);
  }

  // Run dirs, once their task is known gone: listed again, so that a task that exists now keeps its dir.
  const tasksNow = await attempt("tasks (listing them before the run dirs)", () => client.tasks.list());
  if (tasksNow !== undefined && containers !== undefined) {
    const hasTask = new Set(tasksNow.map((t) => t.id));
    const keep = (id: string) => taskNotGone.has(id) || hasTask.has(id);
    const done = new Set<string>();
    const removeRunDir = async (dir: string) => {
      if (done.has(dir)) return; // named by a label and listed too
      done.add(dir);
      if ((await attempt(`run dir ${dir}`, () => removeDeadRunDir(dir, logger, ended))) === true) removed.push(`run dir ${dir}`);
    };
    for (const { id, dir } of labelledDirs) {
      if (keep(id) || keep(basename(dir))) continue;
      await removeRunDir(dir); // unless a live owner's by now (a new run that took the id over): see removeDeadRunDir
    }
    for (const { name, owner } of entries ?? []) {
      if (owner !== undefined && ownerAlive(owner, ended) !== false) continue;
      if (owner === undefined && known.has(name)) continue;
      if (keep(name)) continue;
      await removeRunDir(resolve(runs, name));
    }
    // User namespace ranges of this namespace's dead runs that can no longer be going: dir gone, no task. Only
    // host root hands them out (a rootless daemon's runs share its one namespace), and only it can write the table.
    if (isHostRoot()) {
      const freed = await attempt("user namespace ranges", async () => pruneRanges(HOST_RANGES_BASE, logger, { namespace: ns, hasTask: keep }));
      if (freed) removed.push(`user namespace ranges of ${freed} dead run(s)`);
    }
  }

  // Roots whose runs all ended without removing their mount stubs (the last one died).
  const registries = await attempt("root registries (listing them)", () => readdir(rootRegistriesDir(options.stateDir)).catch(() => [] as string[]));
  for (const name of registries ?? []) {
    const dir = join(rootRegistriesDir(options.stateDir), name);
    if (await attempt(`mount stubs recorded in ${dir}`, () => settleRootRegistry(dir, logger))) removed.push(`mount stubs recorded in ${dir}`);
  }

  // Leases of dead owners, and the active snapshots they held: deleting a lease lets containerd's GC take the rest.
  for (const lease of (await attempt("leases (listing them)", () => client.leases.list())) ?? []) {
    const owner = lease.labels[LABEL.owner];
    if (!owner || ownerAlive(owner, ended) !== false) continue;
    const gone = await attempt(`lease ${lease.id}`, async () => {
      await removeWorkingSnapshots(client, lease.id);
      await client.leases.delete(lease.id, { sync: true });
      return true;
    });
    if (gone === true) removed.push(`lease ${lease.id}`);
  }

  // A FIFO dir belongs to a live run while its container exists, or (the FIFOs are made while containerd
  // stores the record) while the run's dir names a live owner.
  const liveContainers = await attempt("containers (listing them before the FIFO dirs)", () => client.containers.list());
  if (liveContainers !== undefined) {
    const live = new Set(liveContainers.map((c) => c.id));
    for (const name of await readdir(fifos).catch(() => [] as string[])) {
      // "<id>[.exec<16 hex>]-<12 hex>" (older versions: mkdtemp's "-XXXXXX").
      const id = name.replace(/-(?:[0-9a-f]{12}|[A-Za-z0-9]{6})$/, "").replace(/\.exec[0-9a-f]{16}$/, "");
      if (live.has(id)) continue;
      const owner = await readRunOwner(join(runs, id));
      if (owner !== undefined && ownerAlive(owner, ended) !== false) continue;
      const dir = join(fifos, name);
      if ((await attempt(`FIFO dir ${dir}`, () => removeTree(dir).then(() => true))) === true) removed.push(`FIFO dir ${dir}`);
    }
  }
  // The network namespaces of dead owners (with CNI DEL), whatever failed above.
  const netns = await attempt("network namespaces", () => pruneNetns(options.stateDir, ns, logger));
  removed.push(...(netns ?? []));
  if (failures.length > 0) throw new PruneIncompleteError(removed, failures);
  return removed;
}

/**
 * Removes the active and view snapshots `lease` holds (a dead run's root, a dead unpack's layer in the making) by
 * name, before the lease goes. containerd's GC would take them too, but it deletes a snapshot's record without
 * unlinking it from its parent's children (containerd 1.6 metadata/gc.go, `remove`), and Snapshots.Remove refuses
 * a snapshot with children: the parent, a committed snapshot the user removes by name, could never be removed.
 * Committed ones are left to the GC: an image may reference them.
 */
async function removeWorkingSnapshots(client: ContainerdClient, lease: string): Promise<void> {
  const gone = (err: unknown) => {
    if (!(err instanceof NotFoundError)) throw err;
  };
  for (const resource of await client.leases.listResources(lease)) {
    const snapshotter = /^snapshots\/(.+)$/.exec(resource.type)?.[1];
    if (!snapshotter) continue;
    const key = { snapshotter, key: resource.id };
    const info = await client.snapshots.stat(key, { timeoutMs: CLEANUP_RPC_MS }).catch(gone);
    if (info && info.kind !== "COMMITTED") await client.snapshots.remove(key, { timeoutMs: CLEANUP_RPC_MS }).catch(gone);
  }
}

/**
 * Name prune moves a run dir to right before removing it: `.pruning.<12 hex>`. createRunDir never makes one (a
 * container id never starts with a dot; its own temporary names are `.new.*`), so no run takes it over, and a
 * prune that died before removing it leaves an entry the next one judges by its owner file like any other.
 */
const PRUNING = /^\.pruning\.[0-9a-f]{12}$/;

/**
 * Removes a run dir whose owner is dead (or that has no owner file): what it read of the owner earlier is
 * stale, as a new run of the same id may have taken the name over since (createRunDir removes a dead owner's
 * dir and renames its own into place). So the owner is read again right before the dir is renamed to a
 * private name, and once more after, from what moved: a live owner's dir is renamed back. Only then is it
 * removed, under a name no run uses. False when the dir stayed (a live owner's) or was gone.
 *
 * The rename back cannot be told not to replace (Node has no RENAME_NOREPLACE), so it is done only when
 * nothing is at the name, checked just before. In the microseconds between the check and the rename, another
 * run of the id could move its dir into place; rename(2) replaces only an empty directory, and createRunDir
 * only ever puts one there that holds its owner file: that run's dir stays, the rename back fails (ENOTEMPTY,
 * reported), and the dir moved away keeps its live owner, so no prune removes it while that owner lives.
 */
async function removeDeadRunDir(dir: string, logger: Logger, ended: EndedPidNamespaces | undefined): Promise<boolean> {
  const deadOrNone = (owner: string | undefined) => owner === undefined || ownerAlive(owner, ended) === false;
  if (PRUNING.test(basename(dir))) {
    // Already moved by a prune (this one or one that died): no run can take this name.
    if (!deadOrNone(await readRunOwner(dir))) return false;
    await removeTree(dir);
    return true;
  }
  if (!deadOrNone(await readRunOwner(dir))) return false;
  const moved = join(dirname(dir), `.pruning.${randomBytes(6).toString("hex")}`);
  try {
    renameSync(dir, moved);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
  if (!deadOrNone(await readRunOwner(moved))) {
    // A new run took the id between the read and the rename: its dir goes back.
    if (existsSync(dir)) {
      logger.warn(`prune: a live run's dir was moved to ${moved} and its name is taken again; left there`, { dir });
      return false;
    }
    renameSync(moved, dir);
    return false;
  }
  // Left under the private name when it cannot be removed: the id stays free for new runs, and the next
  // prune finds it there (by its owner file, as any entry).
  await removeTree(moved).catch((err: unknown) => {
    throw new UnknownError(`run dir ${dir}, moved to ${moved} for removal, could not be removed: ${(err as Error).message}`, { cause: err });
  });
  return true;
}

/**
 * The run dir a container's label names, if it is one of this namespace's run dirs: normalized first, so that
 * `<runs>/x/../../../etc` is not taken for one (labels are only text, written by whoever made the record).
 */
export function runDirOf(runs: string, label: string | undefined): string | undefined {
  if (!label) return undefined;
  const dir = resolve(label);
  return dirname(dir) === resolve(runs) ? dir : undefined;
}

/**
 * Stops the shims of this namespace that host no task containerd knows of and were started for `candidates`:
 * ids prune knows to be a dead owner's (a record it found with a dead owner, a run dir naming a dead owner;
 * the run dir is made before the container, and a shim is started only for a container, so a shim of ours has
 * one until prune removes it; warm shims' anchors have none, and an orphaned anchor's shim stays). Never an id
 * read from a process: see orphan-shims.ts. A shim another task of the namespace lives in (shim groups) is
 * left alone, as is any shim of a live or unknown owner. An id whose shim could not be stopped goes into
 * `notGone`: a container it started may still run.
 */
async function pruneOrphanShims(
  client: ContainerdClient,
  runtime: string,
  candidates: ReadonlySet<string>,
  logger: Logger,
  removed: string[],
  failures: PruneFailure[],
  notGone: Set<string>,
): Promise<void> {
  const shims = findShims(client.namespace, client.address, candidates);
  if (shims.length === 0) return;
  // Listed after the shims: a task created since then is seen, and its shim is not taken for an orphan.
  const [containers, tasks] = await Promise.all([client.containers.list(), client.tasks.list()]);
  const ids = new Set([...containers.map((c) => c.id), ...tasks.map((t) => t.id)]);
  for (const shim of shims) {
    if (ids.has(shim.id)) continue;
    const socket = shimSocket(shim.pid);
    if (socket !== undefined && [...ids].some((id) => bundleUsesSocket(client.namespace, id, socket))) continue;
    // The listing above may be stale by now: containerd 1.6/1.7 starts the task of a new run with this
    // namespace and id inside this very shim (it reuses a socket that still listens), so a `run --id` begun
    // since would be killed with it, and its container and rootfs with the runc state and bundle. The id is
    // claimed first: while prune's record holds it, no run can create a container of that id.
    const result = await withClaim(client, runtime, shim.id, logger, () => stopOrphanShim(shim, logger));
    if (result === undefined) {
      // Someone holds the id now (a new run): its shim is not prune's to stop, nor its run dir to remove.
      notGone.add(shim.id);
      continue;
    }
    if (result.stopped) removed.push(`orphaned shim of ${shim.id} (pid ${shim.pid})`);
    else if (result.left.length > 0) notGone.add(shim.id);
    for (const line of result.left) failures.push({ what: `orphaned shim of ${shim.id}`, error: new UnknownError(line) });
  }
}

/**
 * Label of the placeholder record prune holds an id with while it stops that id's shim (see withClaim). It also
 * carries prune's owner label: when prune dies before deleting it, the next prune removes it as a dead owner's
 * record (its first phase), like any other.
 */
export const PRUNE_CLAIM_LABEL = "ctrexec.prune-claim";

/**
 * Runs `fn` while prune holds `id` in containerd: a placeholder container record of prune's own, created
 * first and always deleted after. Undefined, without running `fn`, when the id is held by anything else
 * (a record exists: AlreadyExists; or a task exists). A run that tries to create its container meanwhile gets
 * AlreadyExists; the executor waits a moment for a finished ctrexec record to go (awaitRetiredRecord: the
 * claim has an owner label and no task) and else fails with AlreadyExistsError. Failing, or waiting, is what
 * it should get: not a container started in the shim that prune is about to kill.
 */
async function withClaim<T>(client: ContainerdClient, runtime: string, id: string, logger: Logger, fn: () => Promise<T>): Promise<T | undefined> {
  try {
    await client.containers.create({
      id,
      runtime: { name: runtime },
      spec: jsonAny(SPEC_TYPE_URL, defaultSpec(client.namespace, id)),
      labels: { [LABEL.owner]: ownerId(), [PRUNE_CLAIM_LABEL]: "true" },
    });
  } catch (err) {
    if (err instanceof AlreadyExistsError) return undefined;
    throw err;
  }
  try {
    // A task of the id that exists anyway (one containerd reached before the record went) is not prune's.
    const task = await client.tasks.get({ containerId: id }, { timeoutMs: CLEANUP_RPC_MS }).then(
      () => true,
      (err: unknown) => {
        if (err instanceof NotFoundError) return false;
        throw err;
      },
    );
    return task ? undefined : await fn();
  } finally {
    await deleteContainerRecord(client, id).catch((error: unknown) => {
      // Left behind, it names prune (now exiting) as its owner: the next prune removes it as a dead owner's.
      logger.warn(`prune: deleting its claim record ${id} failed; the next prune removes it`, { error });
    });
  }
}
