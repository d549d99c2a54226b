import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { ShimReuse } from "../../src/executor/shim-reuse.js";

const turn = () => new Promise((r) => setImmediate(r));
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Resolves to true if `p` settled within a few turns of the event loop. */
async function settles(p: Promise<void> | undefined): Promise<boolean> {
  if (!p) return true;
  let done = false;
  void p.then(() => (done = true));
  for (let i = 0; i < 3; i++) await turn();
  return done;
}

/**
 * The reuse policy without containerd (the executor does the deleting). Real shims are covered by
 * integration/shim-reuse.test.ts.
 */
describe("ShimReuse policy", () => {
  it("lends a founder's group to the next run, and deletes the founder only after its borrowers", async () => {
    const reuse = new ShimReuse({ idleMs: 60_000 });
    const founder = reuse.take()!;
    const kept = founder.handOver("f");
    assert.ok(kept.gate, "a founder's deletion waits");
    assert.equal(reuse.size, 1);

    const borrower = reuse.take()!;
    assert.equal(borrower.group, founder.group);
    // Lent: a concurrent run founds a new group rather than share a live shim.
    const other = reuse.take()!;
    assert.notEqual(other.group, founder.group);
    other.end(false, true);

    const b = borrower.handOver("b");
    assert.equal(b.gate, undefined, "a borrower is deleted at once");
    const meanwhile = reuse.take()!;
    assert.notEqual(meanwhile.group, founder.group, "lent until the borrower's task is deleted");
    meanwhile.end(false, true);
    b.taskDone(true);
    const again = reuse.take()!;
    assert.equal(again.group, founder.group, "free again once the borrower's task is deleted");
    reuse.close();
    // Closed while a run is lent: the founder waits for it.
    assert.equal(await settles(kept.gate), false);
    // ...which hands over after close: deleted at once, and once its task is gone the founder goes.
    const { gate, taskDone } = again.handOver("x");
    assert.equal(gate, undefined);
    assert.equal(await settles(kept.gate), false);
    taskDone(true);
    taskDone(true);
    assert.ok(await settles(kept.gate));
    assert.equal(reuse.size, 0);
    assert.equal(reuse.take()!.handOver("y").gate, undefined, "a run after close keeps nothing");
    assert.equal(reuse.size, 0);
  });

  it("lets a group go when a run failed in its shim, and keeps it when the run failed before", async () => {
    const reuse = new ShimReuse({ idleMs: 60_000 });
    const kept = reuse.take()!.handOver("f");
    const early = reuse.take()!;
    early.end(false, true);
    assert.equal(await settles(kept.gate), false, "a run canceled before Tasks.Create says nothing about the shim");
    const borrower = reuse.take()!;
    assert.equal(borrower.group, early.group);
    borrower.end(true, true);
    borrower.end(true, true);
    assert.ok(await settles(kept.gate));
    assert.equal(reuse.size, 0);
    assert.notEqual(reuse.take()!.group, borrower.group, "a group that was let go is not lent again");
    reuse.close();
  });

  it("lets a group go when a borrower's task could not be deleted", async () => {
    const reuse = new ShimReuse({ idleMs: 60_000 });
    const f = reuse.take()!;
    const kept = f.handOver("f");
    reuse.take()!.handOver("b").taskDone(false);
    assert.ok(await settles(kept.gate));
    assert.notEqual(reuse.take()!.group, f.group);
    reuse.close();
  });

  it("lets a group go when a borrower ended without handing over and its task could not be deleted", async () => {
    const reuse = new ShimReuse({ idleMs: 60_000 });
    const f = reuse.take()!;
    const kept = f.handOver("f");
    // Canceled before Tasks.Create answered (so nothing says the shim is at fault), and the task that was made
    // all the same could not be deleted: the shim may still host it.
    try {
      reuse.take()!.end(false, false);
      assert.ok(await settles(kept.gate), "the founder goes once the group is let go");
      assert.notEqual(reuse.take()!.group, f.group, "a shim that may host a task is lent again");
    } finally {
      reuse.close();
    }
  });

  it("lends the most recently used group first, and lets idle ones go", async () => {
    const reuse = new ShimReuse({ idleMs: 150 });
    const [a, b] = [reuse.take()!, reuse.take()!];
    const ka = a.handOver("a");
    const kb = b.handOver("b");
    // Sequential runs keep using b; a goes idle and is let go.
    for (let i = 0; i < 4; i++) {
      await delay(50);
      const r = reuse.take()!;
      assert.equal(r.group, b.group);
      r.handOver(`r${i}`).taskDone(true);
    }
    assert.ok(await settles(ka.gate), "the idle group was not let go");
    assert.equal(await settles(kb.gate), false);
    await delay(250);
    assert.ok(await settles(kb.gate));
    assert.equal(reuse.size, 0);
  });

  it("stops lending a group once its founder exited maxAgeMs ago", async () => {
    const reuse = new ShimReuse({ idleMs: 60_000, maxAgeMs: 100 });
    const f = reuse.take()!;
    const kept = f.handOver("f");
    const r = reuse.take()!;
    assert.equal(r.group, f.group);
    await delay(150);
    const { taskDone } = r.handOver("r");
    assert.equal(await settles(kept.gate), false, "not before the borrower's task is deleted");
    taskDone(true);
    assert.ok(await settles(kept.gate));
    assert.notEqual(reuse.take()!.group, f.group);
    reuse.close();
  });

  it("founds nothing for a run with its own id, and releases a founder by id", async () => {
    const reuse = new ShimReuse({ idleMs: 60_000 });
    assert.equal(reuse.take(false), undefined);
    const kept = reuse.take()!.handOver("f");
    const borrowed = reuse.take(false);
    assert.ok(borrowed, "a run with its own id still borrows");
    borrowed.handOver("mine").taskDone(true);
    reuse.release("nobody");
    assert.equal(await settles(kept.gate), false);
    reuse.release("f");
    assert.ok(await settles(kept.gate));
  });

  it("listens for beforeExit only while it keeps founders", async () => {
    const base = process.listeners("beforeExit");
    const one = new ShimReuse({ idleMs: 60_000 });
    const two = new ShimReuse({ idleMs: 60_000 });
    const k1 = one.take()!.handOver("1");
    const k2 = two.take()!.handOver("2");
    const added = process.listeners("beforeExit").filter((l) => !base.includes(l));
    assert.equal(added.length, 1);
    // As if the event loop ran dry (emitting the event would tell node:test the same).
    added[0]!(0);
    assert.ok((await settles(k1.gate)) && (await settles(k2.gate)));
    assert.equal(process.listenerCount("beforeExit"), base.length);
    // Still usable afterwards: a new run founds again.
    one.take()!.handOver("3");
    assert.equal(process.listenerCount("beforeExit"), base.length + 1);
    one.close();
    assert.equal(process.listenerCount("beforeExit"), base.length);
  });
});
