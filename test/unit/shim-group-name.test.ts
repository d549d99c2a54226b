import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { uniqueShimGroupName } from "../../src/executor/shim-group.js";
import { ShimReuse } from "../../src/executor/shim-reuse.js";

describe("shim group names", () => {
  // A run whose group names another executor's shim is created in that shim. Where executors run in
  // containers, many are pid 1: the pid tells nothing apart, and 24 random bits collide among thousands.
  it("carry 96 random bits besides the pid", () => {
    assert.match(uniqueShimGroupName(), new RegExp(`^ctrexec-${process.pid}-[0-9a-f]{24}$`));
    assert.notEqual(uniqueShimGroupName(), uniqueShimGroupName());
  });

  it("the groups founded for shim reuse carry them too", () => {
    const reuse = new ShimReuse({ idleMs: 60_000 });
    try {
      assert.match(reuse.take()!.group, new RegExp(`^ctrexec-${process.pid}-[0-9a-f]{24}-r0$`));
    } finally {
      reuse.close();
    }
  });
});
