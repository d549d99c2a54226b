import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { RunDisposal } from "../../src/executor/run/disposal.js";

describe("RunDisposal", () => {
  it("runs the `now` form of every release, in reverse, when the run was not handed over", async () => {
    const order: string[] = [];
    const d = new RunDisposal(undefined as never);
    d.defer("plain", () => order.push("plain"));
    d.defer("two", { now: () => order.push("two now"), background: () => order.push("two later") });
    d.defer("gone", { now: () => order.push("gone now"), background: undefined });
    await d.release({ succeeded: true });
    assert.deepEqual(order, ["gone now", "two now", "plain"]);
    assert.equal(d.retiring, false);
  });

  it("after retireInBackground, runs the background form instead, or nothing, and plain releases unchanged", async () => {
    const order: string[] = [];
    const d = new RunDisposal(undefined as never);
    d.defer("plain", () => order.push("plain"));
    d.defer("two", { now: () => order.push("two now"), background: () => order.push("two later") });
    d.defer("gone", { now: () => order.push("gone now"), background: undefined });
    d.retireInBackground();
    await d.release({ succeeded: true });
    assert.deepEqual(order, ["two later", "plain"]);
  });

  it("reports a failed release marked failsRun, whichever form failed, and tells later releases", async () => {
    const seen: boolean[] = [];
    const d = new RunDisposal(undefined as never);
    d.defer("commit", (ctx) => void seen.push(ctx.succeeded));
    d.defer("delete task", { now: () => Promise.reject(new Error("not deleted")), background: undefined }, { failsRun: true });
    const errors = await d.release({ succeeded: true });
    assert.equal(errors.length, 1);
    assert.equal(d.failedRun?.message, "not deleted");
    assert.deepEqual(seen, [false]);
  });
});
