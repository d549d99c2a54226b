import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerdClient } from "../../src/containerd/client.js";
import { TaskCreator } from "../../src/containerd/shim-launcher.js";
import { ShimPool } from "../../src/executor/shim-pool.js";
import type { Logger } from "../../src/util/logger.js";

/**
 * The pool's policy without containerd: anchors that cannot start (their rootfs fails first, so the client is
 * never reached). Starting anchors for real is covered by integration/shim-pool.test.ts.
 */
function failingPool(size: number | "auto") {
  const seen = { rootfs: 0, warnings: 0 };
  const logger: Logger = { debug() {}, info() {}, warn: () => void seen.warnings++, error() {} };
  const client = {} as ContainerdClient;
  const pool = new ShimPool({
    client,
    tasks: new TaskCreator(client, undefined, logger),
    size,
    rootfs: () => {
      seen.rootfs++;
      return Promise.reject(new Error("no rootfs for anchors"));
    },
    runtime: "io.containerd.runc.v2",
    logger,
  });
  return { pool, seen };
}
const turn = () => new Promise((r) => setImmediate(r));

/**
 * A pool whose anchors start on a fake containerd that records what it is asked (a task the run could not
 * delete is a fault a real server does not produce on demand).
 */
function fakePool(size: number) {
  const anchors = new Set<string>();
  const deleted: string[] = [];
  const ok = async () => {};
  const client = {
    namespace: "ns",
    containers: { create: async (c: { id: string }) => void anchors.add(c.id), delete: async (id: string) => void anchors.delete(id) },
    tasks: {
      create: ok,
      start: async () => 1,
      get: async () => ({ status: "RUNNING" }),
      delete: async (id: string) => void deleted.push(id),
    },
  } as unknown as ContainerdClient;
  const logger: Logger = { debug() {}, info() {}, warn() {}, error() {} };
  const pool = new ShimPool({ client, tasks: new TaskCreator(client, undefined, logger), size, rootfs: async () => "/rootfs", runtime: "io.containerd.runc.v2", logger });
  return { pool, anchors, deleted };
}

describe("ShimPool policy", () => {
  it("never lends again a shim whose run's task was not deleted: its anchor goes, a fresh shim replaces it", async () => {
    const { pool, anchors, deleted } = fakePool(1);
    pool.take().done(true); // the first take starts the pool
    for (let i = 0; i < 50 && pool.size < 1; i++) await turn();
    const [anchor] = [...anchors];
    const lease = pool.take();
    assert.ok(lease.group, "the warm shim was not lent");
    lease.done(false);
    await pool.settled();
    assert.ok(deleted.includes(anchor!), "the retired shim's anchor was not stopped");
    for (let i = 0; i < 50 && pool.size < 1; i++) await turn();
    const next = pool.take();
    assert.ok(next.group, "no fresh warm shim replaced the retired one");
    assert.notEqual(next.group, lease.group, "a shim that may still host a run's task was lent again");
    next.done(true);
    await pool.settled();
    // A shim whose run's task is known gone goes back as before.
    assert.equal(pool.take().group, next.group);
    await pool.close();
  });

  it("lends nothing it does not have, and tries a failing start once, not on every run", async () => {
    const { pool, seen } = failingPool(2);
    for (let i = 0; i < 5; i++) {
      const lease = pool.take();
      assert.equal(lease.group, undefined);
      lease.done(true);
      await turn();
    }
    assert.equal(seen.rootfs, 1);
    assert.equal(seen.warnings, 1);
    await pool.close();
  });

  it('"auto" starts nothing for the first run, and wants shims from the second', async () => {
    const { pool, seen } = failingPool("auto");
    pool.take().done(true);
    await turn();
    assert.equal(seen.rootfs, 0, "the first run must not start shims ahead");
    pool.take().done(true);
    await turn();
    assert.equal(seen.rootfs, 1);
    await pool.close();
  });

  it("gives closed callers a lease without a shim", async () => {
    const { pool, seen } = failingPool(2);
    await pool.close();
    const lease = pool.take();
    assert.equal(lease.group, undefined);
    lease.done(true);
    await turn();
    assert.equal(seen.rootfs, 0);
  });
});
