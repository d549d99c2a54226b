import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerdClient } from "../../src/containerd/client.js";
import type { Envelope } from "../../src/containerd/types.js";
import { OomWatch } from "../../src/executor/oom-watch.js";
import { Channel } from "../../src/util/channel.js";
import { silentLogger } from "../../src/util/logger.js";

/** An OOM watch on a fake event stream the test feeds (containerd cannot OOM-kill on demand, and not by id). */
function watch(limit?: number) {
  const events = new Channel<Envelope>();
  const client = { events: { subscribe: () => events } } as unknown as ContainerdClient;
  const oom = new OomWatch(client, silentLogger, limit);
  const report = async (...ids: string[]) => {
    for (const containerId of ids) {
      events.push({
        timestamp: null,
        namespace: "ns",
        topic: "/tasks/oom",
        eventType: "containerd.events.TaskOOM",
        event: { type: "TaskOOM", containerId },
      } as Envelope);
    }
    // The watch reads each event on a later turn of the event loop.
    for (let i = 0; i < ids.length + 2; i++) await new Promise((r) => setImmediate(r));
  };
  const close = async () => {
    events.close();
    await oom.close();
  };
  return { oom, report, close };
}

describe("OomWatch", () => {
  it("reports an OOM to the run it happened in, once", async () => {
    const w = watch();
    await w.report("a");
    assert.equal(w.oom.take("a"), true);
    assert.equal(w.oom.take("a"), false);
    await w.close();
  });

  it("does not pin an earlier container's OOM on a new run with the same id", async () => {
    const w = watch();
    // Another process's run "x" (or an exec's process in it) was OOM-killed; nothing of ours took it.
    await w.report("x");
    w.oom.forget("x"); // our run "x" starts
    assert.equal(w.oom.take("x"), false, "the new run x was not OOM-killed");
    await w.report("x"); // this one is the new run's
    assert.equal(w.oom.take("x"), true);
    await w.close();
  });

  it("keeps at most its limit of ids, dropping the oldest report first", async () => {
    const w = watch(3);
    await w.report("a", "b", "c", "a", "d");
    // "a" was reported again after "b": "b" is now the oldest, and goes for "d".
    assert.equal(w.oom.take("b"), false);
    for (const id of ["a", "c", "d"]) assert.equal(w.oom.take(id), true, id);
    await w.close();
  });
});
