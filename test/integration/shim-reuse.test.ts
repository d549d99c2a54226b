import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { InvalidArgumentError } from "../../src/errors.js";
import { ContainerdExecutor, type ExecutorOptions } from "../../src/executor/executor.js";
import { bindMountable } from "../../src/executor/mountables.js";
import { killShim, parentPid as parentOf, shimsOf } from "../helpers/env.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cli = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));

describe("shim reuse (the default)", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("reuse", { shimIdleMs: 1500 });
  });
  after(async () => {
    await env.dispose();
  });

  /** Runs `args` (long enough to find its parent) and resolves with its container id and the pid of its shim. */
  async function shimOfRun(args: string[], ex = env.executor, id?: string): Promise<{ id: string; shim: number }> {
    let shim = 0;
    const r = await ex.run({
      ...(id ? { id } : {}),
      root: { source: bindMountable(env.rootfs) },
      process: { meta: { args } },
      onStarted: ({ pid }) => (shim = parentOf(pid)),
    });
    return { id: r.id, shim };
  }
  const containers = async () => (await env.client.containers.list()).map((c) => c.id).sort();
  async function until<T>(what: string, get: () => Promise<T> | T, ok: (v: T) => boolean, ms = 5000): Promise<T> {
    let v = await get();
    for (const end = Date.now() + ms; !ok(v) && Date.now() < end; v = await get()) await delay(50);
    assert.ok(ok(v), `${what}: ${JSON.stringify(v)}`);
    return v;
  }

  it("runs one after another in the first runs' shims, keeps only their stopped tasks, and lets them go when idle", async () => {
    // A shim is free again once the previous run's task is deleted, so back-to-back runs take turns in two.
    const runs: { id: string; shim: number }[] = [];
    for (let i = 0; i < 6; i++) runs.push(await shimOfRun(["sleep", "0.1"]));
    const shims = [...new Set(runs.map((r) => r.shim))];
    assert.ok(shims.length <= 2, `six runs in ${shims.length} shims`);
    const founders = runs
      .filter((r, i) => runs.findIndex((x) => x.shim === r.shim) === i)
      .map((r) => r.id)
      .sort();
    // The later runs' records go as usual; the founders' stay, stopped, and hold the shims.
    await env.executor.settled({ keepReusableShims: true });
    assert.deepEqual(await containers(), founders);
    // ctrexec ps tells them apart from runs in progress.
    const ps = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [cli, "--namespace", env.namespace, "ps", "--format", "json"], (err, stdout) =>
        err ? reject(err) : resolve(stdout),
      ),
    );
    const listed = JSON.parse(ps) as { id: string; status: string; keptForShimReuse: boolean }[];
    assert.deepEqual(
      listed.map((r) => [r.id, r.status, r.keptForShimReuse]).sort(),
      founders.map((id) => [id, "stopped", true]),
    );
    for (const id of founders) assert.equal((await env.client.tasks.get({ containerId: id })).status, "STOPPED");
    assert.deepEqual(shimsOf(env.namespace).sort(), shims.sort());
    // 1.5 s without runs: the founders are deleted, and their shims exit.
    await until("the founders are deleted when idle", containers, (ids) => ids.length === 0);
    await until(
      "the shim exits",
      () => shimsOf(env.namespace),
      (s) => s.length === 0,
    );
    await env.assertClean();
  });

  it("never puts two live runs in one shim, and reuses each shim afterwards", async () => {
    await env.executor.settled();
    const three = () => Promise.all([0, 1, 2].map(() => shimOfRun(["sleep", "0.3"])));
    const a = await three();
    assert.equal(new Set(a.map((r) => r.shim)).size, 3, "concurrent runs shared a shim");
    const b = await three();
    assert.equal(new Set(b.map((r) => r.shim)).size, 3, "concurrent runs shared a shim");
    const shims = new Set(a.map((r) => r.shim));
    assert.ok(
      b.every((r) => shims.has(r.shim)),
      `second round in ${b.map((r) => r.shim).join(", ")}, first in ${[...shims].join(", ")}`,
    );
    // settled() lets the kept shims go at once.
    await env.executor.settled();
    assert.deepEqual(await containers(), []);
    await until(
      "the shims exit",
      () => shimsOf(env.namespace),
      (s) => s.length === 0,
    );
    await env.assertClean();
  });

  it("lets a shim go after a run in it failed to start, and the next run starts afresh", async () => {
    const first = await shimOfRun(["sleep", "0.1"]);
    await assert.rejects(shimOfRun(["/no/such/command"]), { reason: "not-found" });
    await until("the founder goes with the failed run", containers, (ids) => !ids.includes(first.id), 1000);
    await until(
      "its shim exits",
      () => shimsOf(env.namespace),
      (s) => !s.includes(first.shim),
    );
    const next = await shimOfRun(["sleep", "0.1"]);
    assert.notEqual(next.shim, first.shim);
    await env.assertClean();
  });

  it("runs on when a kept shim dies: containerd starts a fresh one for the group", async () => {
    await env.executor.settled();
    const founder = await shimOfRun(["sleep", "0.1"]);
    const removeSocket = killShim(env.namespace, founder.id, founder.shim);
    for (let i = 0; i < 3; i++) {
      const r = await shimOfRun(["sh", "-c", "sleep 0.1; exit 3"]).catch((e: unknown) => e);
      assert.equal((r as { exitCode?: number }).exitCode, 3, String(r));
    }
    assert.equal((await shimOfRun(["sleep", "0.1"])).shim !== founder.shim, true);
    await env.executor.settled();
    await env.assertClean();
    await removeSocket();
  });

  it("keeps no record of a run whose id the caller chose, and still reuses shims for it", async () => {
    await using ex = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot, shimIdleMs: 60_000 });
    const own = await shimOfRun(["sleep", "0.1"], ex, env.uniqueId("own"));
    await until("the caller's id is free again", containers, (ids) => !ids.includes(own.id), 2000);
    const founder = await shimOfRun(["sleep", "0.1"], ex);
    const borrower = await shimOfRun(["sleep", "0.1"], ex, env.uniqueId("own"));
    assert.equal(borrower.shim, founder.shim);
    await until("only the founder is kept", containers, (ids) => ids.length === 1 && ids[0] === founder.id);
    await ex.close();
    assert.deepEqual(await containers(), []);
    await until(
      "the shim exits at close",
      () => shimsOf(env.namespace),
      (s) => s.length === 0,
    );
  });

  it('is off with shims: "off" and with awaitCleanup', async () => {
    for (const options of [{ shims: "off" }, { awaitCleanup: true }] satisfies ExecutorOptions[]) {
      await using ex = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot, ...options });
      const a = await shimOfRun(["sleep", "0.1"], ex);
      await ex.settled();
      await until(
        "the shim exits",
        () => shimsOf(env.namespace),
        (s) => s.length === 0,
      );
      const b = await shimOfRun(["sleep", "0.1"], ex);
      assert.notEqual(a.shim, b.shim, JSON.stringify(options));
    }
    await env.assertClean();
  });

  it("lets the kept shims go when a process that never called close() runs dry", async () => {
    const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    const script = `
      const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
      const { bindMountable } = await import(${mod("../../src/executor/mountables.js")});
      const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)}, fifoRoot: ${JSON.stringify(env.fifoRoot)}, defaultNetwork: "host", shimIdleMs: 60000 });
      const run = () => ex.run({ root: { source: bindMountable(${JSON.stringify(env.rootfs)}) }, process: { meta: { args: ["true"] } } });
      await Promise.all([run(), run()]);
      await run();
      // no close()`;
    const started = Date.now();
    await new Promise<void>((resolve, reject) =>
      execFile(process.execPath, ["--input-type=module", "-e", script], { timeout: 30_000 }, (err, _stdout, stderr) =>
        err ? reject(new Error(stderr || String(err))) : resolve(),
      ),
    );
    // It never waited out the 60 s: the kept shims went when its event loop ran dry.
    assert.ok(Date.now() - started < 20_000);
    assert.deepEqual(await containers(), [], "the process left containers");
    await until(
      "its shims exit",
      () => shimsOf(env.namespace),
      (s) => s.length === 0,
    );
    await env.assertClean();
  });

  it("rejects a bad idle time, and reuse with awaitCleanup, before making anything", async () => {
    const base = { namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot };
    for (const bad of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      await assert.rejects(
        ContainerdExecutor.create({ ...base, shimIdleMs: bad }),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "shimIdleMs",
      );
    }
    // awaitCleanup deletes every task before run() settles: a founder could keep none.
    await assert.rejects(
      ContainerdExecutor.create({ ...base, shims: "reuse", awaitCleanup: true }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "shims",
    );
    await env.assertClean();
  });
});
