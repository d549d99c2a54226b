import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerdClient } from "../../src/containerd/client.js";
import { TaskCreator } from "../../src/containerd/task-creator.js";
import { LABEL } from "../../src/executor/labels.js";
import { uniqueShimGroupName } from "../../src/executor/shims/group-name.js";
import { createShimPolicy, type ShimPolicyDeps } from "../../src/executor/shims/index.js";
import { offShims } from "../../src/executor/shims/none.js";
import { reuseShims } from "../../src/executor/shims/reuse.js";
import type { Logger } from "../../src/util/logger.js";

const quiet: Logger = { debug() {}, info() {}, warn() {}, error() {} };

describe("shim group names", () => {
  // A run whose group names another executor's shim is created in that shim. Where executors run in
  // containers, many are pid 1: the pid tells nothing apart, and 24 random bits collide among thousands.
  it("carry 96 random bits besides the pid", () => {
    assert.match(uniqueShimGroupName(), new RegExp(`^ctrexec-${process.pid}-[0-9a-f]{24}$`));
    assert.notEqual(uniqueShimGroupName(), uniqueShimGroupName());
  });

  it("the groups founded for shim reuse carry them too", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    try {
      assert.match(reuse.lease({ callerChoseId: false }).group ?? "", new RegExp(`^ctrexec-${process.pid}-[0-9a-f]{24}-r0$`));
    } finally {
      await reuse.close();
    }
  });
});

describe("shims: off", () => {
  it("shares nothing and keeps nothing", async () => {
    const off = offShims();
    for (const callerChoseId of [false, true]) {
      const lease = off.lease({ callerChoseId });
      assert.equal(lease.group, undefined);
      assert.deepEqual(lease.labels, {});
      assert.equal(lease.retire("a").gate, undefined);
      lease.end({ shimAsked: true, taskGone: false });
    }
    off.release("a");
    off.flush();
    await off.settled();
    await off.close();
    await off.close();
  });
});

describe("createShimPolicy", () => {
  /** Deps whose rootfs counts the anchors the policy tried to start (and fails them: no client is needed). */
  function deps() {
    const seen = { rootfs: 0 };
    const client = {} as ContainerdClient;
    const d: ShimPolicyDeps = {
      client,
      tasks: new TaskCreator(client, undefined, quiet),
      rootfs: () => {
        seen.rootfs++;
        return Promise.reject(new Error("no rootfs"));
      },
      runtime: "io.containerd.runc.v2",
      logger: quiet,
    };
    return { d, seen };
  }

  it("chooses the policy the option names", async () => {
    const off = deps();
    const none = createShimPolicy({ kind: "off" }, off.d).lease({ callerChoseId: false });
    assert.equal(none.group, undefined);

    const reuse = createShimPolicy({ kind: "reuse", idleMs: 60_000 }, deps().d);
    const founder = reuse.lease({ callerChoseId: false });
    assert.ok(founder.group);
    assert.deepEqual(founder.labels, { [LABEL.shimFounder]: "true" });
    await reuse.close();

    const warm = deps();
    const pool = createShimPolicy({ kind: "warm", size: 2, idleMs: 30_000 }, warm.d);
    const lease = pool.lease({ callerChoseId: false });
    assert.equal(lease.group, undefined, "nothing is warm before the first run");
    lease.end({ shimAsked: false, taskGone: true });
    await pool.settled();
    assert.equal(warm.seen.rootfs, 1, "the warm pool did not try to start an anchor");
    await pool.close();
    assert.equal(off.seen.rootfs, 0);
  });
});
