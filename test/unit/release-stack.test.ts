import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ReleaseStack } from "../../src/util/release-stack.js";

describe("ReleaseStack", () => {
  it("releases in reverse order of registration", async () => {
    const order: string[] = [];
    const s = new ReleaseStack();
    s.defer("a", () => order.push("a"));
    s.defer("b", async () => {
      await new Promise((r) => setTimeout(r, 5));
      order.push("b");
    });
    s.defer("c", () => order.push("c"));
    assert.deepEqual(await s.release(), []);
    assert.deepEqual(order, ["c", "b", "a"]);
  });

  it("runs every release even when some fail, and returns the failures", async () => {
    const order: string[] = [];
    const s = new ReleaseStack();
    s.defer("a", () => order.push("a"));
    s.defer("b", () => {
      throw new Error("b failed");
    });
    s.defer("c", () => Promise.reject(new Error("c failed")));
    const errors = await s.release();
    assert.deepEqual(errors.map((e) => e.message), ["c failed", "b failed"]);
    assert.deepEqual(order, ["a"]);
  });

  it("is idempotent, also under concurrent release", async () => {
    let n = 0;
    const s = new ReleaseStack();
    s.defer("once", async () => {
      await new Promise((r) => setTimeout(r, 5));
      n++;
    });
    await Promise.all([s.release(), s.release()]);
    await s.release();
    assert.equal(n, 1);
    assert.throws(() => s.defer("late", () => {}), /after release/);
  });
});
