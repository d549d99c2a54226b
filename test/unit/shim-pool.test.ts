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

describe("ShimPool policy", () => {
  it("lends nothing it does not have, and tries a failing start once, not on every run", async () => {
    const { pool, seen } = failingPool(2);
    for (let i = 0; i < 5; i++) {
      const lease = pool.take();
      assert.equal(lease.group, undefined);
      lease.done();
      await turn();
    }
    assert.equal(seen.rootfs, 1);
    assert.equal(seen.warnings, 1);
    await pool.close();
  });

  it('"auto" starts nothing for the first run, and wants shims from the second', async () => {
    const { pool, seen } = failingPool("auto");
    pool.take().done();
    await turn();
    assert.equal(seen.rootfs, 0, "the first run must not start shims ahead");
    pool.take().done();
    await turn();
    assert.equal(seen.rootfs, 1);
    await pool.close();
  });

  it("gives closed callers a lease without a shim", async () => {
    const { pool, seen } = failingPool(2);
    await pool.close();
    const lease = pool.take();
    assert.equal(lease.group, undefined);
    lease.done();
    await turn();
    assert.equal(seen.rootfs, 0);
  });
});
