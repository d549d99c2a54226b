import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ContainerdExecutor } from "../../src/executor/executor.js";
import { bindMountable } from "../../src/executor/mountables.js";
import { CanceledError, ExitError, UnavailableError } from "../../src/errors.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { createTestEnv, shimsOf, type TestEnv } from "../helpers/env.js";
import { OwnContainerd } from "../helpers/own-containerd.js";
import { Collect } from "../helpers/streams.js";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("reliability under load and faults", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("rel");
  });
  after(async () => {
    await env.dispose();
  });

  it("200 runs, 8 at a time, 20% canceled at random moments, 10% failing: every outcome right, nothing left", async () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const outcomes: string[] = [];
    const rss: number[] = [];
    let next = 0;
    const one = async (i: number) => {
      const kind = rand(10) < 2 ? (["before", "starting", "running", "teardown"] as const)[rand(4)]! : rand(10) < 1 ? "fail" : "ok";
      const ac = new AbortController();
      const stdout = new Collect();
      const script = kind === "fail" ? `exit ${1 + (i % 100)}` : kind === "running" ? "sleep 30" : kind === "teardown" ? "true" : `echo run-${i}`;
      if (kind === "before") ac.abort(new Error("before"));
      if (kind === "starting") setTimeout(() => ac.abort(new Error("starting")), rand(40));
      const p = env.executor.run({
        root: { source: bindMountable(env.rootfs) },
        process: { meta: { args: ["sh", "-c", script] }, stdout },
        signal: ac.signal,
        onStarted: () => {
          if (kind === "running") setTimeout(() => ac.abort(new Error("running")), rand(100));
          if (kind === "teardown") ac.abort(new Error("teardown"));
        },
      });
      const r = await p.then(
        (v) => ({ ok: true as const, v }),
        (e: unknown) => ({ ok: false as const, e }),
      );
      const reason = ac.signal.aborted ? (ac.signal.reason as Error).message : "";
      switch (kind) {
        case "ok":
          assert.ok(r.ok, `run ${i}: ${String(!r.ok && r.e)}`);
          assert.equal(stdout.text, `run-${i}\n`);
          break;
        case "fail":
          assert.ok(!r.ok && r.e instanceof ExitError && r.e.exitCode === 1 + (i % 100), `run ${i}: ${String(!r.ok && r.e)}`);
          break;
        case "before":
          assert.ok(!r.ok && r.e instanceof CanceledError, `run ${i}: ${String(!r.ok && r.e)}`);
          break;
        case "running":
          assert.ok(!r.ok && r.e instanceof ExitError && r.e.exitCode === 137 && (r.e.cause as Error).message === reason, `run ${i}: ${String(!r.ok && r.e)}`);
          break;
        default:
          // Canceled while starting or tearing down: canceled, killed, or done if the exit won the race.
          assert.ok(
            r.ok || r.e instanceof CanceledError || (r.e instanceof ExitError && r.e.exitCode === 137),
            `run ${i} (${kind}): ${String(!r.ok && r.e)}`,
          );
      }
      outcomes.push(kind);
    };
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < 200) {
          const i = next++;
          await one(i);
          if (i % 25 === 0) rss.push(process.memoryUsage().rss);
        }
      }),
    );
    assert.equal(outcomes.length, 200);
    assert.ok(outcomes.filter((k) => k !== "ok" && k !== "fail").length >= 20, "too few cancellations to mean anything");
    const growth = (Math.max(...rss.slice(2)) - rss[1]!) / 2 ** 20;
    assert.ok(growth < 64, `RSS grew ${growth.toFixed(1)} MiB over the load`);
    await env.assertClean();
  });

  it("a run whose shim dies gets a clear error, and nothing is left", async () => {
    const id = env.uniqueId("shim");
    let started!: () => void;
    const s = new Promise<void>((r) => (started = r));
    const p = env.executor.run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sleep", "30"] } }, onStarted: () => started() }).catch((e: unknown) => e);
    await s;
    const shims = shimsOf(env.namespace);
    assert.equal(shims.length, 1, "expected exactly our run's shim");
    process.kill(shims[0]!, "SIGKILL"); // the shim of the test's own container
    const err = await p;
    assert.ok(err instanceof ExitError, String(err));
    assert.ok(err.exitCode === 255 || err.exitCode === 137, `exit code ${err.exitCode}`);
    await env.assertClean();
  });
});

describe("containerd restarts", () => {
  let ctd: OwnContainerd;
  let env: TestEnv;
  before(async () => {
    ctd = new OwnContainerd("restart");
    await ctd.start();
    env = await createTestEnv("restart");
  });
  after(async () => {
    await ctd.dispose();
    await env.dispose().catch(() => {});
  });

  it("a run survives a containerd restart and reports its real exit code", async () => {
    await using ex = await ContainerdExecutor.create({ address: ctd.address, namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot, defaultNetwork: "host" });
    let started!: () => void;
    const s = new Promise<void>((r) => (started = r));
    const stdout = new Collect();
    const p = ex
      .run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sh", "-c", "sleep 2; echo survived; exit 7"] }, stdout }, onStarted: () => started() })
      .catch((e: unknown) => e);
    await s;
    await ctd.stop();
    await delay(500);
    await ctd.start();
    const err = await p;
    assert.ok(err instanceof ExitError && err.exitCode === 7, String(err));
    assert.equal(stdout.text, "survived\n");
    const client = ex.client;
    assert.deepEqual((await client.containers.list()).map((c) => c.id), []);
    assert.deepEqual((await client.tasks.list()).map((t) => t.id), []);
    await client.namespaces.delete(env.namespace).catch(() => {});
  });

  it("gives up with UnavailableError when containerd stays away past the bound", async () => {
    await using ex = await ContainerdExecutor.create({
      address: ctd.address,
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "host",
      reconnectBoundMs: 1500,
    });
    let started!: () => void;
    const s = new Promise<void>((r) => (started = r));
    const p = ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sleep", "1"] } }, onStarted: () => started() }).catch((e: unknown) => e);
    await s;
    await ctd.stop();
    const err = await p;
    assert.ok(err instanceof UnavailableError, String(err));
    assert.match(err.message, /containerd is not reachable/);
    // When containerd is back, the executor finishes the cleanup it could not do.
    await ctd.start();
    let left: string[] = ["?"];
    for (let i = 0; i < 100 && left.length > 0; i++) {
      await delay(200);
      left = (await ex.client.containers.list().catch(() => [{ id: "?" }])).map((c) => c.id);
    }
    assert.deepEqual(left, []);
    assert.deepEqual((await ex.client.tasks.list()).map((t) => t.id), []);
    await ex.client.namespaces.delete(env.namespace).catch(() => {});
  });
});
