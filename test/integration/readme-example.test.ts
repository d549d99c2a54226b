import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, rmdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { ContainerdClient } from "../../src/containerd/client.js";
import { NotFoundError } from "../../src/errors.js";
import { ContainerdExecutor, DEFAULT_FIFO_ROOT, DEFAULT_STATE_DIR } from "../../src/index.js";
import { mountsUnder, removeRuntimeNamespaceDirs, shimsOf } from "../helpers/env.js";

const repo = fileURLToPath(new URL("../../../", import.meta.url));
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The fenced blocks of one language in the README's "Using the library" section. */
async function readmeBlocks(lang: string): Promise<string[]> {
  const readme = await readFile(join(repo, "README.md"), "utf8");
  const start = readme.indexOf("\n## Using the library\n");
  assert.ok(start >= 0, "README has a 'Using the library' section");
  const end = readme.indexOf("\n## ", start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(new RegExp(`^\`\`\`${lang}\\n([\\s\\S]*?)^\`\`\`$`, "gm"))].map((m) => m[1] ?? "");
}

/**
 * The README's library example, run as a user would run it: the TypeScript form (`await using`) compiled by the
 * build, and the plain JavaScript form (`try/finally`) as is, each in a Node process of its own, importing the
 * package by its name. Each gets its own containerd namespace (CONTAINERD_NAMESPACE, which the example leaves to
 * the environment) and must leave nothing behind in it.
 */
describe("the README's library example", () => {
  let stateDir: string;
  let n = 0;

  before(async () => {
    stateDir = await mkdtemp(join(tmpdir(), "ctrexec-test-readme-"));
  });
  after(async () => {
    await rm(stateDir, { recursive: true, force: true });
  });

  it("is the examples' code, verbatim", async () => {
    assert.deepEqual(await readmeBlocks("ts"), [await readFile(join(repo, "examples/readme.ts"), "utf8")]);
    assert.deepEqual(await readmeBlocks("js"), [await readFile(join(repo, "examples/readme.mjs"), "utf8")]);
  });

  for (const [form, file] of [
    ["TypeScript form (await using), compiled", "dist/examples/readme.js"],
    ["JavaScript form (try/finally)", "examples/readme.mjs"],
  ] as const) {
    it(`runs as written: the ${form}`, async () => {
      const namespace = `h18b-readme-${process.pid}-${++n}`;
      const fifoRoot = join(stateDir, "fifo");
      const client = new ContainerdClient({ namespace });
      try {
        const out = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
          // The state dir and FIFO root are offered through the environment as well; wherever the executor puts
          // them, the checks below look at both.
          const env = { ...process.env, CONTAINERD_NAMESPACE: namespace, CTREXEC_ROOT: stateDir, CTREXEC_FIFO_ROOT: fifoRoot };
          execFile(process.execPath, [join(repo, file)], { cwd: repo, env }, (err, stdout, stderr) => {
            resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
          });
        });
        assert.equal(out.code, 0, `${file} failed: ${out.stderr}`);
        assert.match(out.stdout, /^hello from ctrexec, CI=1$/m);
        assert.match(out.stdout, /^uid=1000\(user\) gid=1000\(user\)/m);
        assert.match(out.stdout, /^0 \{ cpuNanos: \d+, memoryPeakBytes: \d+/m, "the result's exit code and usage are printed");
        const id = /^started (\S+)$/m.exec(out.stderr)?.[1];
        assert.ok(id, `onStarted reported the run's id: ${out.stderr}`);
        await assertNothingLeft(client, namespace, id, [stateDir, DEFAULT_STATE_DIR], [fifoRoot, DEFAULT_FIFO_ROOT]);
      } finally {
        await disposeNamespace(client, namespace, [stateDir, DEFAULT_STATE_DIR], [fifoRoot, DEFAULT_FIFO_ROOT]);
      }
    });
  }
});

/** What a run could leave behind, in the namespace and under each candidate state dir and FIFO root. */
async function assertNothingLeft(client: ContainerdClient, namespace: string, id: string, stateDirs: string[], fifoRoots: string[]) {
  const ids = (records: { id: string }[]) => records.map((r) => r.id);
  assert.deepEqual(ids(await client.containers.list()), [], "containers left in the namespace");
  assert.deepEqual(ids(await client.tasks.list()), [], "tasks left in the namespace");
  // containerd cleans up after a shim that exits with a short-lived `shim ... delete`: give that a moment.
  let shims = shimsOf(namespace);
  for (let i = 0; i < 30 && shims.length > 0; i++) {
    await delay(100);
    shims = shimsOf(namespace);
  }
  assert.deepEqual(shims, [], "shims left for the namespace");
  assert.deepEqual(await readdir(`/run/containerd/io.containerd.runtime.v2.task/${namespace}`).catch(() => []), [], "bundles left");
  assert.deepEqual(await readdir(`/run/containerd/runc/${namespace}`).catch(() => []), [], "runc states left");
  for (const dir of stateDirs) {
    const runs = join(dir, "runs", namespace);
    assert.deepEqual(await readdir(runs).catch(() => []), [], `run dirs left in ${runs}`);
    assert.deepEqual(mountsUnder(runs), [], `mounts left under ${runs}`);
    const files = (await readdir(dir).catch(() => [])).filter((f) => f.includes(id));
    assert.deepEqual(files, [], `per-run files of ${id} left in ${dir}`);
  }
  for (const dir of fifoRoots) {
    assert.deepEqual(await readdir(join(dir, namespace)).catch(() => []), [], `FIFO directories left in ${dir}`);
  }
}

/**
 * Removes what a failed example left (its process is gone, so prune takes it all: tasks, containers, mounts, run
 * and FIFO dirs), deletes the namespace and the empty per-namespace directories, then closes the client.
 */
async function disposeNamespace(client: ContainerdClient, namespace: string, stateDirs: string[], fifoRoots: string[]) {
  for (const [i, root] of stateDirs.entries()) {
    const executor = await ContainerdExecutor.create({ namespace, root, fifoRoot: fifoRoots[i]! });
    await executor.prune().catch(() => []);
    await executor.close();
  }
  // containerd's garbage collector may still hold the namespace's last snapshots for a moment.
  let deleted = false;
  for (let i = 0; i < 30 && !deleted; i++) {
    deleted = await client.namespaces.delete(namespace).then(
      () => true,
      (e: unknown) => e instanceof NotFoundError,
    );
    if (!deleted) await delay(100);
  }
  if (deleted) await removeRuntimeNamespaceDirs(namespace);
  for (const dir of [...stateDirs.map((d) => join(d, "runs", namespace)), ...fifoRoots.map((d) => join(d, namespace))]) {
    await rmdir(dir).catch(() => {});
  }
  await client.close();
}
