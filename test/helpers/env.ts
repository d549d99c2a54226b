import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, rmdir } from "node:fs/promises";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContainerdClient } from "../../src/containerd/client.js";
import { InvalidArgumentError, NotFoundError } from "../../src/errors.js";
import { dropRanges, HOST_RANGES_BASE } from "../../src/executor/userns-ranges.js";
import { mountPointsUnder } from "../../src/fs/mountinfo.js";
import { ensureDefaultRootfs } from "../../src/rootfs/default-rootfs.js";

/**
 * An isolated place for one test file against the real containerd: its own containerd namespace, state dir,
 * FIFO root and default rootfs. `assertNoLeaks` checks everything a run could leave behind; `dispose` removes
 * what is left and the namespace itself.
 */
export interface TestEnv {
  client: ContainerdClient;
  namespace: string;
  stateDir: string;
  fifoRoot: string;
  rootfs: string;
  uniqueId(prefix?: string): string;
  assertNoLeaks(): Promise<void>;
  /**
   * After a synchronous GC, nothing left in the namespace (containers, images, leases, snapshots, content): what a
   * test that removed all it made must see, and what dispose needs to delete the namespace. Fails naming what is left.
   */
  assertNamespaceEmpty(): Promise<void>;
  dispose(): Promise<void>;
}

export async function createTestEnv(name: string): Promise<TestEnv> {
  const namespace = `ctrexec-test-${name}-${process.pid}`;
  const stateDir = await mkdtemp(join(tmpdir(), `ctrexec-test-${name}-`));
  const fifoRoot = join(stateDir, "fifo");
  const rootfs = await ensureDefaultRootfs(stateDir);
  const client = new ContainerdClient({ namespace });
  let n = 0;

  const env: TestEnv = {
    client,
    namespace,
    stateDir,
    fifoRoot,
    rootfs,
    uniqueId: (prefix = "t") => `${prefix}${++n}-${randomBytes(4).toString("hex")}`,
    async assertNoLeaks() {
      const containers = await client.containers.list();
      assert.deepEqual(
        containers.map((c) => c.id),
        [],
        "containers left in the namespace",
      );
      const tasks = await client.tasks.list();
      assert.deepEqual(
        tasks.map((t) => t.id),
        [],
        "tasks left in the namespace",
      );
      const fifoDirs: string[] = [];
      for (const ns of await readdir(fifoRoot).catch(() => [])) {
        for (const d of await readdir(join(fifoRoot, ns)).catch(() => [])) fifoDirs.push(`${ns}/${d}`);
      }
      assert.deepEqual(fifoDirs, [], "FIFO directories left");
      assert.deepEqual(mountsUnder(stateDir), [], "mounts left under the state dir");
      // containerd cleans up after a dead shim with a short-lived `shim ... delete`: give that a moment.
      let shims = shimsOf(namespace);
      for (let i = 0; i < 30 && shims.length > 0; i++) {
        await new Promise((r) => setTimeout(r, 100));
        shims = shimsOf(namespace);
      }
      assert.deepEqual(shims, [], "shims left for the namespace");
      const bundles = await readdir(`/run/containerd/io.containerd.runtime.v2.task/${namespace}`).catch(() => []);
      assert.deepEqual(bundles, [], "bundle directories left");
      const runcStates = await readdir(`/run/containerd/runc/${namespace}`).catch(() => []);
      assert.deepEqual(runcStates, [], "runc container states left");
    },
    async assertNamespaceEmpty() {
      await collectGarbage(client);
      const left = await namespaceContents(client);
      assert.deepEqual(left, [], `left in namespace ${namespace}:\n${left.join("\n")}`);
    },
    async dispose() {
      for (const t of await client.tasks.list().catch(() => [])) {
        await client.tasks.kill({ containerId: t.id, signal: 9, all: true }).catch(() => {});
        await client.tasks.wait({ containerId: t.id }, { timeoutMs: 5000 }).catch(() => {});
        await client.tasks.delete(t.id).catch(() => {});
      }
      for (const c of await client.containers.list().catch(() => [])) await client.containers.delete(c.id).catch(() => {});
      // What the test released (deleted images and leases, and snapshots that GC must take because it took a child
      // of theirs and containerd now refuses them by name) containerd's GC collects only when its scheduler gets to
      // it, paced by pause_threshold: tens of seconds when collections are slow. A synchronous collection makes the
      // delete below depend only on what the test left, not on that timing.
      await collectGarbage(client).catch(() => {});
      const deleted = await client.namespaces.delete(namespace).then(
        () => true,
        (e: unknown) => e instanceof NotFoundError,
      );
      // Left after the test's own cleanup and a synchronous GC: a leak of the library or of the test.
      const left = deleted ? [] : await namespaceContents(client).catch((e: unknown) => [`(not listed: ${(e as Error).message})`]);
      if (deleted) await removeRuntimeNamespaceDirs(namespace);
      forgetRanges(namespace);
      await client.close();
      await rm(stateDir, { recursive: true, force: true });
      assert.equal(deleted, true, `namespace ${namespace} could not be deleted; left in it:\n${left.join("\n")}`);
    },
  };
  return env;
}

/**
 * Runs containerd's GC now and waits for it to finish: a lease deleted with `sync` makes containerd's scheduler
 * collect at once (ScheduleAndWait) instead of at its paced interval.
 */
export async function collectGarbage(client: ContainerdClient): Promise<void> {
  const lease = `ctrexec-test-gc-${randomBytes(6).toString("hex")}`;
  await client.leases.create(lease);
  await client.leases.delete(lease, { sync: true });
}

/** What is left in the client's namespace, one line per kind: what keeps the namespace from being deleted, and what pins it. */
export async function namespaceContents(client: ContainerdClient): Promise<string[]> {
  const lines: string[] = [];
  const add = async (what: string, list: () => Promise<string[]>) => {
    const items = await list();
    if (items.length > 0) lines.push(`${what}: ${items.join(", ")}`);
  };
  await add("containers", async () => (await client.containers.list()).map((c) => c.id));
  await add("tasks", async () => (await client.tasks.list()).map((t) => t.id));
  await add("images", async () => (await client.images.list()).map((i) => i.name));
  await add("leases", async () => (await client.leases.list()).map((l) => l.id));
  for (const { id } of await client.introspection.plugins(["type==io.containerd.snapshotter.v1"])) {
    // Snapshotters that failed to load (aufs, zfs... on most hosts) are listed too, and refuse the call.
    await add(`snapshots (${id})`, async () =>
      (await client.snapshots.list(id).catch((e: unknown) => (e instanceof InvalidArgumentError ? [] : Promise.reject(e)))).map(
        (x) => `${x.name} (${x.kind.toLowerCase()}${x.parent ? ` on ${x.parent}` : ""})`,
      ),
    );
  }
  await add("content", async () => (await client.content.list()).map((b) => b.digest));
  return lines;
}

/**
 * Removes the host-wide user namespace range entries of a test's namespace: a test that failed midway must not
 * leave ranges held in /run/ctrexec for good (prune frees only those of dead processes, and the test's is alive).
 */
export function forgetRanges(namespace: string): void {
  dropRanges(HOST_RANGES_BASE, (e) => e.namespace === namespace);
}

/**
 * containerd keeps an empty directory per namespace ever used under its runtime's state and root, and runc one
 * under its root; a test suite run would leave dozens. Call after the namespace is deleted: only empty ones go
 * (rmdir).
 */
export async function removeRuntimeNamespaceDirs(namespace: string): Promise<void> {
  for (const base of ["/run/containerd", "/var/lib/containerd"]) {
    await rmdir(`${base}/io.containerd.runtime.v2.task/${namespace}`).catch(() => {});
  }
  await rmdir(`/run/containerd/runc/${namespace}`).catch(() => {});
}

/** Mount points (from /proc/self/mountinfo) at or below `dir`. */
export function mountsUnder(dir: string): string[] {
  return mountPointsUnder(dir);
}

/** Pids of containerd-shim processes serving `namespace` (read only; we never signal what we did not start). */
export function shimsOf(namespace: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    let argv: string[];
    try {
      argv = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0");
    } catch {
      continue;
    }
    // ctrexec-shim: the launcher, while it starts or deletes a shim in containerd's place.
    if (!argv[0]?.includes("containerd-shim") && !argv[0]?.includes("ctrexec-shim")) continue;
    const i = argv.indexOf("-namespace");
    if (i >= 0 && argv[i + 1] === namespace) pids.push(Number(entry));
  }
  return pids;
}

/**
 * Kills (SIGKILL) shim `pid`, which hosts our container `id`, and returns a function that removes the shim's
 * socket file once nothing listens on it: a killed shim cannot remove it, and containerd does not either.
 */
export function killShim(namespace: string, id: string, pid: number): () => Promise<void> {
  const address = readFileSync(`/run/containerd/io.containerd.runtime.v2.task/${namespace}/${id}/address`, "utf8").trim();
  const socket = address.replace(/^unix:\/\//, "");
  process.kill(pid, "SIGKILL");
  return async () => {
    const listening = await new Promise<boolean>((resolve) => {
      const c = connect(socket, () => {
        c.destroy();
        resolve(true);
      });
      c.on("error", () => resolve(false));
    });
    if (!listening) await rm(socket, { force: true });
  };
}

/** The parent pid of `pid` (the shim, for a container's process), from /proc. */
export function parentPid(pid: number): number {
  return Number(readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[1]);
}
