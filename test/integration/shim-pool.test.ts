import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ContainerdClient } from "../../src/containerd/client.js";
import { InvalidArgumentError, UnavailableError } from "../../src/errors.js";
import { ContainerdExecutor } from "../../src/executor/executor.js";
import { bindMountable } from "../../src/executor/mountables.js";
import { SHIM_GROUP_ANNOTATION } from "../../src/executor/shims/group-name.js";
import type { Spec } from "../../src/oci/types.js";
import { createTestEnv, killShim, parentPid as parentOf, shimsOf, type TestEnv } from "../helpers/env.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("warm shims (opt-in)", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("warm", { shims: { warm: 2 } });
  });
  after(async () => {
    await env.dispose();
  });

  /** The shim pid of each running anchor. */
  async function warmShims(): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const c of await env.client.containers.list()) {
      if (!c.id.startsWith("ctrexec-anchor-")) continue;
      const t = await env.client.tasks.get({ containerId: c.id }).catch(() => undefined);
      if (t?.status === "RUNNING") out.set(c.id, parentOf(t.pid));
    }
    return out;
  }
  async function untilWarm(n: number): Promise<Map<string, number>> {
    for (let i = 0; i < 100; i++) {
      const w = await warmShims();
      if (w.size === n) return w;
      await delay(100);
    }
    throw new Error(
      `the pool never had ${n} warm shims: ${JSON.stringify([...(await warmShims()).entries()])}, containers ${(await env.client.containers.list()).map((c) => c.id).join(" ")}`,
    );
  }
  /** Runs `args` and resolves with the pid of the shim that hosted it. */
  async function shimOfRun(args: string[]): Promise<number> {
    let shim = 0;
    await env.executor.run({
      root: { source: bindMountable(env.rootfs) },
      process: { meta: { args } },
      onStarted: ({ pid }) => (shim = parentOf(pid)),
    });
    return shim;
  }

  it("lends each warm shim to one run at a time, and replaces one that died", async () => {
    await shimOfRun(["true"]); // the first run starts its own shim and the pool fills behind it
    // Not only in containerd but in the pool: an anchor's task shows RUNNING a moment before the pool sees its
    // start return, and a run then got a shim of its own (issue 21). settled() waits for the pool's filling.
    await env.executor.settled();
    let warm = await untilWarm(2);
    const warmPids = new Set(warm.values());
    // Concurrent runs never share a shim: a shim crash can only take one run with it.
    const [a, b] = await Promise.all([shimOfRun(["sleep", "1"]), shimOfRun(["sleep", "1"])]);
    assert.notEqual(a, b);
    assert.ok(warmPids.has(a) && warmPids.has(b), `runs in ${a}, ${b}; warm shims ${[...warmPids].join(", ")}`);
    await env.executor.settled();
    await untilWarm(2);
    // Sequential runs land in warm shims, and no shim is started for them.
    for (let i = 0; i < 3; i++) {
      const shim = await shimOfRun(["sleep", "0.1"]);
      assert.ok(warmPids.has(shim), `run ${i} in shim ${shim}; warm shims ${[...warmPids].join(", ")}`);
      await env.executor.settled();
      await untilWarm(2);
    }
    assert.equal(shimsOf(env.namespace).length, 2);

    // A warm shim that dies (we kill the one we made) costs the next run nothing, and is replaced.
    const [victimAnchor, victim] = [...warm.entries()][0]!;
    const removeSocket = killShim(env.namespace, victimAnchor, victim);
    for (let i = 0; i < 4; i++) await shimOfRun(["true"]);
    await env.executor.settled();
    warm = await untilWarm(2);
    assert.ok(!warm.has(victimAnchor), "the dead shim's anchor was replaced");
    assert.ok(![...warm.values()].includes(victim));
    await removeSocket();
  });

  it("removes every anchor at close, and its shims exit", async () => {
    await env.executor.close();
    await env.assertClean();
    for (let i = 0; i < 50 && shimsOf(env.namespace).length > 0; i++) await delay(100);
    assert.deepEqual(shimsOf(env.namespace), []);
  });

  it("rejects a bad pool size before making anything", async () => {
    for (const bad of [-1, 1.5, 1000, Number.NaN]) {
      await assert.rejects(
        ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot, shims: { warm: bad } }),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "shims",
      );
    }
    await env.assertClean();
  });
});

describe('warm shims, "auto"', () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("warmauto", { shims: { warm: "auto" }, shimIdleMs: 1500 });
  });
  after(async () => {
    await env.dispose();
  });

  const anchors = async () => (await env.client.containers.list()).filter((c) => c.id.startsWith("ctrexec-anchor-")).map((c) => c.id);
  async function until(what: string, ok: (n: number) => boolean): Promise<number> {
    for (let i = 0; i < 100; i++) {
      const n = (await anchors()).length;
      if (ok(n)) return n;
      await delay(100);
    }
    throw new Error(`anchors never ${what}: ${(await anchors()).join(" ")}`);
  }
  const run = (args: string[]) => env.executor.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args } } });

  it("starts nothing for a single run, grows with the runs in progress, and lets go when idle", async () => {
    await run(["true"]);
    await env.executor.settled();
    await delay(300);
    assert.deepEqual(await anchors(), [], "a single run must not start shims ahead");

    // A second run, then three at once: the pool grows to twice the peak of leases out (a run holds its
    // shim until its task is deleted, so the second run may still count): 6 or 8.
    await run(["true"]);
    await until("reached 2", (n) => n >= 2);
    await Promise.all([run(["sleep", "0.5"]), run(["sleep", "0.5"]), run(["sleep", "0.5"])]);
    await env.executor.settled();
    const pool = await until("reached 6", (n) => n >= 6);
    assert.ok(pool <= 8, `${pool} anchors for at most 4 runs at once`);
    // Runs use them: no shim beyond the pool's own while one runs.
    let shims = 0;
    await env.executor.run({
      root: { source: bindMountable(env.rootfs) },
      process: { meta: { args: ["sleep", "0.3"] } },
      onStarted: () => {
        shims = shimsOf(env.namespace).length;
      },
    });
    assert.equal(shims, pool, "the run started a shim of its own");

    // 1.5 s without runs: every anchor and its shim goes; the executor runs on and grows again when asked.
    await env.executor.settled();
    await until("went away", (n) => n === 0);
    await env.executor.settled();
    for (let i = 0; i < 50 && shimsOf(env.namespace).length > 0; i++) await delay(100);
    assert.deepEqual(shimsOf(env.namespace), []);
    await run(["true"]);
    await run(["true"]);
    await until("came back", (n) => n >= 2);
  });

  it("stops every anchor at close", async () => {
    await env.executor.close();
    await env.assertClean();
  });

  it('rejects a bad idle time, and a pool that is neither a size nor "auto"', async () => {
    const base = { namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot };
    const field = (name: string) => (e: unknown) => e instanceof InvalidArgumentError && e.field === name;
    await assert.rejects(ContainerdExecutor.create({ ...base, shims: { warm: "auto" }, shimIdleMs: -1 }), field("shimIdleMs"));
    await assert.rejects(ContainerdExecutor.create({ ...base, shims: { warm: "many" as unknown as number } }), field("shims"));
    await assert.rejects(ContainerdExecutor.create({ ...base, shims: "warm" as unknown as "off" }), field("shims"));
  });
});

/** Issue 17, item 5: a warm shim whose run's task was not deleted may still host it, and is never lent again. */
describe("warm shims: a run's task left behind", () => {
  let env: TestEnv;
  before(async () => {
    env = await createTestEnv("sem-warm");
  });
  after(async () => {
    await env.dispose();
  });

  it("retires a warm shim whose run's task could not be deleted, and lends the next run another", async () => {
    const client = new ContainerdClient({ namespace: env.namespace });
    // Fault injection on the real client: containerd refuses to delete the task of the first run that got a warm
    // shim (as if it were away), until the test lets it go. The group each container asked for is recorded.
    const groups = new Map<string, string | undefined>();
    let stuck: string | undefined;
    let refuse = true;
    const realCreate = client.containers.create;
    client.containers.create = async (c, o) => {
      const group = (JSON.parse(Buffer.from(c.spec.value).toString("utf8")) as Spec).annotations?.[SHIM_GROUP_ANNOTATION];
      groups.set(c.id, group);
      if (group && stuck === undefined && !c.id.startsWith("ctrexec-anchor-")) stuck = c.id;
      return realCreate(c, o);
    };
    const realDelete = client.tasks.delete;
    client.tasks.delete = (id, o) => (refuse && id === stuck ? Promise.reject(new UnavailableError("injected")) : realDelete(id, o));
    const ex = await ContainerdExecutor.create({ client, root: env.stateDir, fifoRoot: env.fifoRoot, defaultNetwork: "host", shims: { warm: 1 } });
    const run = (id: string) => ex.run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } });
    const anchorOf = async (group: string) =>
      (await client.containers.list()).filter((c) => c.id.startsWith("ctrexec-anchor-") && groups.get(c.id) === group).map((c) => c.id);
    try {
      // Runs until one lands in a warm shim (the pool fills behind the first run).
      for (let i = 0; i < 50 && stuck === undefined; i++) {
        assert.equal((await run(env.uniqueId("warmup"))).exitCode, 0);
        await ex.settled();
        if (stuck === undefined) await delay(100);
      }
      assert.ok(stuck, "no run ever got a warm shim");
      const group = groups.get(stuck)!;
      await ex.settled(); // the stuck task's deletion failed and was handed to the retries; the lease came back
      assert.deepEqual(
        (await client.tasks.list()).filter((t) => t.id === stuck).map((t) => t.status),
        ["STOPPED"],
        "the injected fault did not hold the task",
      );

      const next = env.uniqueId("next");
      assert.equal((await run(next)).exitCode, 0);
      assert.notEqual(groups.get(next), group, "the next run shares a shim with a task that was never deleted");
      assert.deepEqual(await anchorOf(group), [], "the retired shim's anchor was kept");
    } finally {
      refuse = false;
      await ex.close();
      await client.close();
    }
    await env.assertNoLeaks();
  });
});
