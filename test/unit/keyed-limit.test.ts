import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { KeyedLimit } from "../../src/util/keyed-limit.js";

/** A call that stays in flight until released, recording how many of its key were in flight at once. */
function harness() {
  const inFlight = new Map<string, number>();
  const most = new Map<string, number>();
  const order: number[] = [];
  const releases: (() => void)[] = [];
  const call =
    (key: string, n: number, fail = false) =>
    async () => {
      const now = (inFlight.get(key) ?? 0) + 1;
      inFlight.set(key, now);
      most.set(key, Math.max(most.get(key) ?? 0, now));
      order.push(n);
      await new Promise<void>((resolve) => releases.push(resolve));
      inFlight.set(key, (inFlight.get(key) ?? 1) - 1);
      if (fail) throw new Error(`call ${n} failed`);
      return n;
    };
  const releaseAll = async () => {
    while (releases.length > 0 || [...inFlight.values()].some((v) => v > 0)) {
      for (const r of releases.splice(0)) r();
      await new Promise((r) => setImmediate(r));
    }
  };
  return { call, most, order, releaseAll };
}

describe("KeyedLimit", () => {
  it("lets at most `limit` calls of one key run at once, the rest in order, and keys apart", async () => {
    const limit = new KeyedLimit(3);
    const h = harness();
    const a = Array.from({ length: 10 }, (_, i) => limit.run("a", h.call("a", i)));
    const b = Array.from({ length: 4 }, (_, i) => limit.run("b", h.call("b", 100 + i)));
    await new Promise((r) => setImmediate(r));
    assert.deepEqual(h.order, [0, 1, 2, 100, 101, 102], "three of each key start, no more");
    await h.releaseAll();
    assert.deepEqual(await Promise.all(a), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    assert.deepEqual(await Promise.all(b), [100, 101, 102, 103]);
    assert.equal(h.most.get("a"), 3);
    assert.equal(h.most.get("b"), 3);
    assert.deepEqual(
      h.order.filter((n) => n < 100),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
      "waiting calls go in order",
    );
  });

  it("passes a failed call's place on, and never lets a newcomer overtake a waiting call", async () => {
    const limit = new KeyedLimit(1);
    const h = harness();
    const first = limit.run("k", h.call("k", 1, true)).catch((e: unknown) => e);
    const second = limit.run("k", h.call("k", 2));
    await new Promise((r) => setImmediate(r));
    const released = h.releaseAll();
    // Arrives while the slot passes from the first call to the second.
    const third = limit.run("k", h.call("k", 3));
    await released;
    await h.releaseAll();
    assert.match(String(await first), /call 1 failed/);
    assert.equal(await second, 2);
    assert.equal(await third, 3);
    assert.deepEqual(h.order, [1, 2, 3]);
    assert.equal(h.most.get("k"), 1);
  });
});
