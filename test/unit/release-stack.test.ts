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
    assert.deepEqual(
      errors.map((e) => e.message),
      ["c failed", "b failed"],
    );
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
  it("tells which failures fail the work, and tells later releases the work failed", async () => {
    const seen: [string, boolean][] = [];
    const logged: [string, string][] = [];
    const logger = {
      debug() {},
      info() {},
      warn: (m: string) => void logged.push(["warn", m]),
      error: (m: string) => void logged.push(["error", m]),
    };
    const s = new ReleaseStack(logger);
    s.defer("keep result", ({ succeeded }) => void seen.push(["keep result", succeeded]));
    s.defer("delete task", () => Promise.reject(new Error("task stays")), { failsRun: true });
    s.defer("release mount", ({ succeeded }) => {
      seen.push(["release mount", succeeded]);
      throw new Error("mount stays");
    });
    const errors = await s.release({ succeeded: true });
    assert.deepEqual(
      errors.map((e) => e.message),
      ["mount stays", "task stays"],
    );
    assert.equal(s.failedRun?.message, "task stays", "only the failsRun failure fails the work");
    // Released before the task's deletion failed, the mount saw a success; the later one saw the failure.
    assert.deepEqual(seen, [
      ["release mount", true],
      ["keep result", false],
    ]);
    assert.deepEqual(logged, [
      ["warn", "cleanup: release mount failed"],
      ["error", "cleanup: delete task failed"],
    ]);

    const plain = new ReleaseStack();
    plain.defer("x", () => Promise.reject(new Error("x")));
    await plain.release({ succeeded: false });
    assert.equal(plain.failedRun, undefined);
  });
});
