import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, rmdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ContainerdClient } from "../../src/containerd/client.js";
import { NotFoundError } from "../../src/errors.js";
import { ContainerdExecutor, type ExecutorOptions } from "../../src/executor/executor.js";
import { bindMountable } from "../../src/executor/mountables.js";
import type { ProcessInfo, ProcessMeta, RunRequest, RunResult } from "../../src/executor/types.js";
import { mountPointsUnder } from "../../src/fs/mountinfo.js";
import { DEFAULT_SNAPSHOTTER } from "../../src/image/image.js";
import { ensureDefaultRootfs } from "../../src/rootfs/default-rootfs.js";
import { collectGarbage, namespaceContents, shimsOf } from "../helpers/env.js";
import { waitFor } from "../helpers/rootless.js";
import { Collect } from "../helpers/streams.js";

/**
 * The rootless pass's inner tests run as the test user inside rootlesskit's namespaces (`ctrexec rootless enter`),
 * where containerd's socket, /run/containerd (bound to the user's runtime dir), the shims and /proc of its pid
 * namespace are all what a root test sees on the host. Each test gets its own containerd namespace and state dir
 * and an executor that finds the rootless daemon by itself (no address, no `rootless: true`).
 */

/** The user's runtime dir, where the daemon's socket and the rootless FIFO root live. */
export const RUNTIME_DIR = process.env["XDG_RUNTIME_DIR"] ?? `/run/user/${process.getuid?.() ?? 0}`;
/** The rootless FIFO root (both mount namespaces see it). */
export const ROOTLESS_FIFO_ROOT = join(RUNTIME_DIR, "ctrexec", "fifo");

export interface RootlessEnv {
  executor: ContainerdExecutor;
  client: ContainerdClient;
  namespace: string;
  stateDir: string;
  fifoRoot: string;
  /** The built-in rootfs of the state dir, for runs that need their root on disk to look at. */
  rootfs(): Promise<string>;
  uniqueId(prefix?: string): string;
  /** Runs `sh -c script` on the built-in root and returns its stdout (rejects on a non-zero exit). */
  output(script: string, meta?: Partial<ProcessMeta>, extra?: Partial<RunRequest> & Partial<ProcessInfo>): Promise<string>;
  sh(script: string, meta?: Partial<ProcessMeta>, extra?: Partial<RunRequest> & Partial<ProcessInfo>): Promise<RunResult>;
  /** Nothing of the test's runs is left: containers, tasks, snapshots of runs, run dirs, FIFOs, mounts, shims. */
  assertClean(): Promise<void>;
  dispose(): Promise<void>;
}

/** The rootless state dir ctrexec uses unless given one: `$XDG_DATA_HOME/ctrexec`, else `~/.local/share/ctrexec`. */
export function defaultRootlessStateDir(): string {
  const data = process.env["XDG_DATA_HOME"] || join(process.env["HOME"] ?? "/nonexistent", ".local", "share");
  return join(data, "ctrexec");
}

/**
 * `defaultStateDir`: use the executor's own rootless state dir instead of a fresh one (shared by the user's
 * other runs, so it is left in place).
 */
export async function createRootlessEnv(name: string, options: ExecutorOptions = {}, defaultStateDir = false): Promise<RootlessEnv> {
  // Root of rootlesskit's user namespace, not the host's root (whose uid_map is the identity).
  const uidMap = readFileSync("/proc/self/uid_map", "utf8").trim().split(/\s+/).join(" ");
  assert.ok(
    process.getuid?.() === 0 && uidMap !== "0 0 4294967295",
    `the inner rootless tests run as the test user through \`ctrexec rootless enter\` (test/integration/rootless.test.ts starts them); uid ${process.getuid?.()}, uid_map ${uidMap}`,
  );
  const namespace = `ctrexec-rl-${name}-${process.pid}-${randomBytes(2).toString("hex")}`;
  const stateDir = defaultStateDir ? defaultRootlessStateDir() : await mkdtemp(join(tmpdir(), `ctrexec-rl-${name}-`));
  // The FIFOs go to the user's rootless FIFO root, in a dir per namespace: this env's own.
  const fifoRoot = ROOTLESS_FIFO_ROOT;
  const executor = await ContainerdExecutor.create({ namespace, ...(defaultStateDir ? {} : { root: stateDir }), ...options });
  // A second connection of our own for the leak checks: the executor's would be closed by then.
  const client = new ContainerdClient({ address: executor.client.address, namespace });
  let n = 0;
  let rootfs: string | undefined;
  const sh = (script: string, meta: Partial<ProcessMeta> = {}, extra: Partial<RunRequest> & Partial<ProcessInfo> = {}) => {
    const { stdin, stdout, stderr, resize, signals, ...req } = extra;
    return executor.run({
      ...req,
      process: {
        meta: { args: ["sh", "-c", script], ...meta },
        stdin: stdin ?? null,
        stdout: stdout ?? null,
        stderr: stderr ?? null,
        ...(resize ? { resize } : {}),
        ...(signals ? { signals } : {}),
      },
    });
  };
  const runDirs = () => readdir(join(stateDir, "runs", namespace)).catch(() => [] as string[]);
  const env: RootlessEnv = {
    executor,
    client,
    namespace,
    stateDir,
    fifoRoot,
    async rootfs() {
      rootfs ??= await ensureDefaultRootfs(stateDir);
      return rootfs;
    },
    uniqueId: (prefix = "t") => `${prefix}${++n}-${randomBytes(4).toString("hex")}`,
    sh,
    async output(script, meta = {}, extra = {}) {
      const stdout = new Collect();
      const stderr = new Collect();
      try {
        await sh(script, meta, { stdout, stderr, ...extra });
      } catch (err) {
        throw new Error(`${script}: ${String(err)}\nstderr: ${stderr.text}`, { cause: err });
      }
      return stdout.text;
    },
    async assertClean() {
      await executor.settled();
      assert.deepEqual(
        (await client.containers.list()).map((c) => c.id),
        [],
        "containers left in the namespace",
      );
      assert.deepEqual(
        (await client.tasks.list()).map((t) => t.id),
        [],
        "tasks left in the namespace",
      );
      // Committed snapshots of a pulled image are the image's; anything else is a run's.
      const snapshots = await client.snapshots.list(DEFAULT_SNAPSHOTTER);
      assert.deepEqual(
        snapshots.filter((s) => s.kind !== "COMMITTED").map((s) => `${s.kind} ${s.name}`),
        [],
        "snapshots of runs left",
      );
      assert.deepEqual(await runDirs(), [], "run dirs left");
      assert.deepEqual(await readdir(join(fifoRoot, namespace)).catch(() => []), [], "FIFO dirs left");
      assert.deepEqual(mountPointsUnder(stateDir), [], "mounts left under the state dir");
      // containerd removes a dead shim's leftovers with a short-lived `shim delete`: bounded wait, not a sleep.
      await waitFor(() => shimsOf(namespace).length === 0, 3000);
      assert.deepEqual(shimsOf(namespace), [], "shims left for the namespace");
      assert.deepEqual(await readdir(`/run/containerd/io.containerd.runtime.v2.task/${namespace}`).catch(() => []), [], "bundles left");
      assert.deepEqual(await readdir(`/run/containerd/runc/${namespace}`).catch(() => []), [], "runc states left");
    },
    async dispose() {
      await executor.close();
      for (const t of await client.tasks.list().catch(() => [])) {
        await client.tasks.kill({ containerId: t.id, signal: 9, all: true }).catch(() => {});
        await client.tasks.wait({ containerId: t.id }, { timeoutMs: 5000 }).catch(() => {});
        await client.tasks.delete(t.id).catch(() => {});
      }
      for (const c of await client.containers.list().catch(() => [])) await client.containers.delete(c.id).catch(() => {});
      for (const i of await client.images.list().catch(() => [])) await client.images.delete(i.name, { sync: true }).catch(() => {});
      // What the images and runs released, a synchronous GC collects now, not when containerd's pacing gets to it.
      await collectGarbage(client).catch(() => {});
      const deleted = await client.namespaces.delete(namespace).then(
        () => true,
        (e: unknown) => e instanceof NotFoundError,
      );
      const left = deleted ? [] : await namespaceContents(client).catch((e: unknown) => [`(not listed: ${(e as Error).message})`]);
      await client.close();
      // The namespace's own (empty) dirs in the shared places.
      await rmdir(join(fifoRoot, namespace)).catch(() => {});
      await rmdir(join(stateDir, "runs", namespace)).catch(() => {});
      if (!defaultStateDir) {
        await rm(stateDir, { recursive: true, force: true });
        assert.equal(existsSync(stateDir), false);
      }
      assert.equal(deleted, true, `namespace ${namespace} could not be deleted; left in it:\n${left.join("\n")}`);
    },
  };
  return env;
}

/** Runs `body` with a fresh env, checks for leaks after it, and disposes of the env whatever happened. */
export async function withEnv(
  name: string,
  body: (env: RootlessEnv) => Promise<void>,
  options: ExecutorOptions = {},
  defaultStateDir = false,
): Promise<void> {
  const env = await createRootlessEnv(name, options, defaultStateDir);
  try {
    await body(env);
    await env.assertClean();
  } finally {
    await env.dispose();
  }
}

/** A bind of the built-in rootfs of the env's state dir as the root (for checks on the root's files afterwards). */
export async function boundRoot(env: RootlessEnv): Promise<Pick<RunRequest, "root">> {
  return { root: { source: bindMountable(await env.rootfs()) } };
}
