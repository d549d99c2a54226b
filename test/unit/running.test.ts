import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { CanceledError, ContainerExitedError } from "../../src/errors.js";
import { RunState } from "../../src/executor/running.js";

describe("RunState (exec's view of a run)", () => {
  it("resolves waiters when the process starts", async () => {
    const s = new RunState("r");
    const w = s.waitRunning();
    s.markStarted();
    await w;
    await s.waitRunning();
  });

  it("tells waiters how the run ended", async () => {
    const ok = new RunState("a");
    const w1 = ok.waitRunning();
    ok.finish(undefined);
    await assert.rejects(w1, (e: unknown) => e instanceof ContainerExitedError && e.message === "container a has stopped");
    const bad = new RunState("b");
    bad.finish(new Error("exit code: 1"));
    await assert.rejects(bad.waitRunning(), { message: "container b has exited with error: exit code: 1" });
  });

  it("stops waiting when the caller cancels", async () => {
    const s = new RunState("c");
    const ac = new AbortController();
    const w = s.waitRunning(ac.signal);
    ac.abort(new Error("bye"));
    await assert.rejects(w, (e: unknown) => e instanceof CanceledError && (e.cause as Error).message === "bye");
  });
});
