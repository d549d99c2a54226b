import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerdClient } from "../../src/containerd/client.js";
import { TaskCreator } from "../../src/containerd/task-creator.js";
import type { ShimLease, ShimPolicy } from "../../src/executor/shims/policy.js";
import { warmShims } from "../../src/executor/shims/warm.js";
import type { Logger } from "../../src/util/logger.js";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };
const turn = () => new Promise((r) => setImmediate(r));
const take = (pool: ShimPolicy): ShimLease => pool.lease({ callerChoseId: false });
/** Ends a lease as a run that never got as far as its shim. */
const endEarly = (lease: ShimLease) => lease.end({ shimAsked: false, taskGone: true });

/**
 * The pool's policy without containerd: anchors that cannot start (their rootfs fails first, so the client is
 * never reached). Starting anchors for real is covered by integration/shim-pool.test.ts.
 */
function failingPool(size: number | "auto") {
  const seen = { rootfs: 0, warnings: 0 };
  const logger: Logger = { ...quiet, warn: () => void seen.warnings++ };
  const client = {} as ContainerdClient;
  const pool = warmShims({
    client,
    tasks: new TaskCreator(client, undefined, logger),
    size,
    rootfs: () => {
      seen.rootfs++;
      return Promise.reject(new Error("no rootfs for anchors"));
    },
    runtime: "io.containerd.runc.v2",
    logger,
    idleMs: 30_000,
  });
  return { pool, seen };
}

/**
 * A pool whose anchors start on a fake containerd that records what it is asked (a task the run could not
 * delete is a fault a real server does not produce on demand). `startGate` holds each anchor's Tasks.Start.
 */
function fakePool(size: number, startGate?: () => Promise<void>) {
  const anchors = new Set<string>();
  const deleted: string[] = [];
  const ok = async () => {};
  const client = {
    namespace: "ns",
    containers: { create: async (c: { id: string }) => void anchors.add(c.id), delete: async (id: string) => void anchors.delete(id) },
    tasks: {
      create: ok,
      start: async () => {
        await startGate?.();
        return 1;
      },
      get: async () => ({ status: "RUNNING" }),
      delete: async (id: string) => void deleted.push(id),
    },
  } as unknown as ContainerdClient;
  const pool = warmShims({
    client,
    tasks: new TaskCreator(client, undefined, quiet),
    size,
    rootfs: async () => "/rootfs",
    runtime: "io.containerd.runc.v2",
    logger: quiet,
    idleMs: 30_000,
  });
  return { pool, anchors, deleted };
}

describe("shims: warm", () => {
  it("lends each warm shim to one run at a time, with no labels", async () => {
    const { pool } = fakePool(2);
    endEarly(take(pool)); // the first lease starts the pool
    await pool.settled();
    const [a, b, c] = [take(pool), take(pool), take(pool)];
    assert.ok(a.group && b.group && a.group !== b.group, `${a.group} ${b.group}`);
    assert.equal(c.group, undefined, "a third concurrent run shared a lent shim");
    assert.deepEqual(a.labels, {});
    // Back through the background deletion (retire) or at once (end): both are lent again.
    const h = a.retire("a");
    assert.equal(h.gate, undefined, "a warm shim's run is deleted at once");
    a.end({ shimAsked: true, taskGone: false }); // a no-op after retire
    h.taskDone(true);
    h.taskDone(false); // only the first report counts
    endEarly(b);
    endEarly(c);
    // Both checks of returned shims end in the same turn: each once counted the other, thought the pool over its
    // target, and stopped a shim.
    await pool.settled();
    const again = [take(pool), take(pool)].map((l) => l.group).sort();
    assert.deepEqual(again, [a.group, b.group].sort());
    await pool.close();
  });

  // Issue 21: the integration test saw an anchor RUNNING in containerd and ran two runs at once, but the pool
  // had not yet seen that anchor's start return, and lent only one: settled() now waits for the pool's filling.
  it("settles only once the anchors it is starting are in the pool", async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let starts = 0;
    const { pool } = fakePool(2, () => (++starts === 2 ? held : Promise.resolve()));
    endEarly(take(pool));
    let settled = false;
    const s = pool.settled().then(() => (settled = true));
    for (let i = 0; i < 20; i++) await turn();
    assert.equal(starts, 2, "the second anchor's start was not reached");
    assert.equal(settled, false, "settled while an anchor was still starting");
    release();
    await s;
    const [a, b] = [take(pool), take(pool)];
    assert.ok(a.group && b.group, "settled, yet the pool lent fewer than its two shims");
    endEarly(a);
    endEarly(b);
    await pool.close();
  });

  it("never lends again a shim whose run's task was not deleted: its anchor goes, a fresh shim replaces it", async () => {
    const { pool, anchors, deleted } = fakePool(1);
    endEarly(take(pool));
    await pool.settled();
    const [anchor] = [...anchors];
    const lease = take(pool);
    assert.ok(lease.group, "the warm shim was not lent");
    lease.retire("r").taskDone(false);
    await pool.settled();
    assert.ok(deleted.includes(anchor!), "the retired shim's anchor was not stopped");
    const next = take(pool);
    assert.ok(next.group, "no fresh warm shim replaced the retired one");
    assert.notEqual(next.group, lease.group, "a shim that may still host a run's task was lent again");
    next.end({ shimAsked: true, taskGone: true });
    await pool.settled();
    // A shim whose run's task is known gone goes back as before, even after a failure in it (unlike reuse:
    // a dead warm shim is noticed at its return, and replaced).
    const back = take(pool);
    assert.equal(back.group, next.group);
    // A run that ended without handing over, its task still there: retired too.
    back.end({ shimAsked: false, taskGone: false });
    await pool.settled();
    const fresh = take(pool);
    assert.ok(fresh.group && fresh.group !== back.group);
    endEarly(fresh);
    await pool.close();
  });

  it("stops a lent shim's anchor at close, once: the lease that ends afterwards leaves nothing to do", async () => {
    const { pool, anchors, deleted } = fakePool(1);
    endEarly(take(pool));
    await pool.settled();
    const [anchor] = [...anchors];
    const lease = take(pool);
    assert.ok(lease.group);
    await pool.close();
    assert.deepEqual(deleted, [anchor]);
    lease.retire("r").taskDone(true);
    await pool.settled();
    assert.deepEqual(deleted, [anchor]);
  });

  it("lends nothing it does not have, and tries a failing start once, not on every run", async () => {
    const { pool, seen } = failingPool(2);
    for (let i = 0; i < 5; i++) {
      const lease = take(pool);
      assert.equal(lease.group, undefined);
      endEarly(lease);
      await pool.settled();
    }
    assert.equal(seen.rootfs, 1);
    assert.equal(seen.warnings, 1);
    await pool.close();
  });

  it('"auto" starts nothing for the first run, and wants shims from the second', async () => {
    const { pool, seen } = failingPool("auto");
    endEarly(take(pool));
    await pool.settled();
    assert.equal(seen.rootfs, 0, "the first run must not start shims ahead");
    endEarly(take(pool));
    await pool.settled();
    assert.equal(seen.rootfs, 1);
    await pool.close();
  });

  it("gives closed callers a lease without a shim, and keeps nothing for them", async () => {
    const { pool, seen } = failingPool(2);
    await pool.close();
    const lease = take(pool);
    assert.equal(lease.group, undefined);
    assert.equal(lease.retire("x").gate, undefined);
    pool.release("x");
    pool.flush();
    await pool.settled();
    assert.equal(seen.rootfs, 0);
  });
});
