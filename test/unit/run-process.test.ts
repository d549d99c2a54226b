import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerdClient } from "../../src/containerd/client.js";
import type { ProcessIO } from "../../src/containerd/io.js";
import { CanceledError, UnknownError } from "../../src/errors.js";
import { runProcess, signalNumber } from "../../src/executor/run/process.js";
import { silentLogger } from "../../src/util/logger.js";
import { startSpan } from "../../src/util/tracing.js";

/**
 * runProcess against a scripted client: the cases the real daemon cannot be made to produce on demand
 * (a process that ignores SIGKILL, a Wait that fails), like BuildKit's fake-process tests (reference §10, 12 and 15).
 */
function fakeClient(behaviour: { wait: () => Promise<{ exitStatus: number; exitedAt: null }>; start?: () => Promise<number> }) {
  const calls: string[] = [];
  const client = {
    tasks: {
      wait: () => {
        calls.push("wait");
        return behaviour.wait();
      },
      start: () => {
        calls.push("start");
        return behaviour.start ? behaviour.start() : Promise.resolve(42);
      },
      kill: async (req: { signal: number }) => {
        calls.push(`kill ${req.signal}`);
      },
      closeIO: async () => {
        calls.push("closeIO");
      },
      resizePty: async () => {},
    },
  };
  return { client: client as unknown as ContainerdClient, calls };
}

function fakeIO() {
  const calls: string[] = [];
  const io = {
    closeStdinWhenDone: (f: () => Promise<void>) => void f(),
    cancel: () => calls.push("cancel"),
    wait: async () => {
      calls.push("wait");
    },
  };
  return { io: io as unknown as ProcessIO, calls };
}

const base = { ref: { containerId: "c" }, command: "cmd", logger: silentLogger, span: startSpan(undefined, "t") };

describe("runProcess", () => {
  it("subscribes to the exit before starting, closes stdin after, and waits for output", async () => {
    const { client, calls } = fakeClient({ wait: async () => ({ exitStatus: 3, exitedAt: null }) });
    const { io, calls: ioCalls } = fakeIO();
    const out = await runProcess({ ...base, client, io });
    assert.deepEqual(out, { exitCode: 3, canceled: false });
    assert.deepEqual(calls.slice(0, 3), ["wait", "start", "closeIO"]);
    assert.deepEqual(ioCalls, ["wait"]);
  });

  it("gives up with 'failed to kill process on cancel' when SIGKILL has no effect", async () => {
    const { client, calls } = fakeClient({ wait: () => new Promise(() => {}) });
    const { io, calls: ioCalls } = fakeIO();
    const ac = new AbortController();
    const started = Date.now();
    const p = runProcess({ ...base, client, io, signal: ac.signal, killTimeoutMs: 200, onStarted: () => ac.abort() });
    await assert.rejects(p, { message: "failed to kill process on cancel" });
    assert.ok(Date.now() - started < 2000);
    assert.ok(calls.includes("kill 9"));
    assert.ok(ioCalls.includes("cancel"));
  });

  it("starts in its turn, and never starts when canceled while it waited for it", async () => {
    const { client, calls } = fakeClient({ wait: async () => ({ exitStatus: 0, exitedAt: null }) });
    const turns: (() => void)[] = [];
    const startTurn = <T>(start: () => Promise<T>) => new Promise<void>((r) => turns.push(r)).then(start);
    const ac = new AbortController();
    const p = runProcess({ ...base, client, io: fakeIO().io, signal: ac.signal, startTurn });
    await new Promise((r) => setImmediate(r));
    assert.equal(turns.length, 1, "Start waits for its turn");
    assert.deepEqual(calls, ["wait"]);
    ac.abort(new Error("stop"));
    turns[0]!();
    await assert.rejects(p, CanceledError);
    assert.deepEqual(calls, ["wait"], "no Start after a cancel");

    const ok = fakeClient({ wait: async () => ({ exitStatus: 0, exitedAt: null }) });
    const q = runProcess({ ...base, client: ok.client, io: fakeIO().io, startTurn });
    await new Promise((r) => setImmediate(r));
    turns[1]!();
    assert.equal((await q).exitCode, 0);
    assert.deepEqual(ok.calls.slice(0, 2), ["wait", "start"]);
  });

  it("reports 255 and the cause when the exit status cannot be read", async () => {
    const failure = new UnknownError("connection lost");
    const { client } = fakeClient({ wait: () => Promise.reject(failure) });
    const out = await runProcess({ ...base, client, io: fakeIO().io });
    assert.equal(out.exitCode, 255);
    assert.equal(out.waitError, failure);
  });

  it("does not start when already canceled, and releases IO when start fails", async () => {
    const { client, calls } = fakeClient({ wait: () => new Promise(() => {}) });
    await assert.rejects(runProcess({ ...base, client, io: fakeIO().io, signal: AbortSignal.abort() }), CanceledError);
    assert.deepEqual(calls, []);
    const failing = fakeClient({
      wait: () => new Promise(() => {}),
      start: () => Promise.reject(new UnknownError('OCI runtime exec failed: exec: "x": executable file not found in $PATH')),
    });
    const { io, calls: ioCalls } = fakeIO();
    await assert.rejects(runProcess({ ...base, client: failing.client, io, command: "x" }), { name: "StartError", reason: "not-found" });
    assert.deepEqual(ioCalls, ["cancel"]);
  });

  it("maps signal names and numbers", () => {
    assert.equal(signalNumber("SIGTERM"), 15);
    assert.equal(signalNumber("sighup" as NodeJS.Signals), 1);
    assert.equal(signalNumber(9), 9);
    assert.throws(() => signalNumber("SIGNOPE" as NodeJS.Signals), /unknown signal/);
    assert.throws(() => signalNumber(0), /unknown signal/);
  });
});
