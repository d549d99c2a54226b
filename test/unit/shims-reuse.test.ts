import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { LABEL } from "../../src/executor/labels.js";
import type { ShimLease, ShimPolicy } from "../../src/executor/shims/policy.js";
import { reuseShims } from "../../src/executor/shims/reuse.js";

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
/** A lease for a run whose id the executor made up (`own`: the caller chose it). */
const take = (policy: ShimPolicy, own = false): ShimLease => policy.lease({ callerChoseId: own });
const ended = (shimAsked: boolean, taskGone: boolean) => ({ shimAsked, taskGone });

/**
 * The reuse policy without containerd (the executor does the deleting). Real shims are covered by
 * integration/shim-reuse.test.ts.
 */
describe("shims: reuse", () => {
  it("lends a founder's group to the next run, and deletes the founder only after its borrowers", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    const founder = take(reuse);
    assert.deepEqual(founder.labels, { [LABEL.shimFounder]: "true" }, "the founder's record is marked for prune and ps");
    const kept = founder.retire("f");
    assert.ok(kept.gate, "a founder's deletion waits");

    const borrower = take(reuse);
    assert.equal(borrower.group, founder.group);
    assert.deepEqual(borrower.labels, {});
    // Lent: a concurrent run founds a new group rather than share a live shim.
    const other = take(reuse);
    assert.ok(other.group);
    assert.notEqual(other.group, founder.group);
    other.end(ended(false, true));

    const b = borrower.retire("b");
    assert.equal(b.gate, undefined, "a borrower is deleted at once");
    borrower.end(ended(true, false)); // a no-op after retire: the group stays lent, then free
    const meanwhile = take(reuse);
    assert.notEqual(meanwhile.group, founder.group, "lent until the borrower's task is deleted");
    meanwhile.end(ended(false, true));
    b.taskDone(true);
    const again = take(reuse);
    assert.equal(again.group, founder.group, "free again once the borrower's task is deleted");
    await reuse.close();
    // Closed while a run is lent: the founder waits for it.
    assert.equal(await settles(kept.gate), false);
    // ...which hands over after close: deleted at once, and once its task is gone the founder goes.
    const { gate, taskDone } = again.retire("x");
    assert.equal(gate, undefined);
    assert.equal(await settles(kept.gate), false);
    taskDone(true);
    taskDone(true);
    assert.ok(await settles(kept.gate));
    const late = take(reuse);
    assert.equal(late.group, undefined, "a run after close shares nothing");
    assert.equal(late.retire("y").gate, undefined, "a run after close keeps nothing");
  });

  it("keeps nothing for a founder that ended without handing its task over", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    const founder = take(reuse);
    founder.end(ended(false, true));
    assert.equal(founder.retire("f").gate, undefined);
    assert.notEqual(take(reuse).group, founder.group, "a group whose founder kept nothing was lent");
    await reuse.close();
  });

  it("lets a group go when a run failed in its shim, and keeps it when the run failed before", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    const kept = take(reuse).retire("f");
    const early = take(reuse);
    early.end(ended(false, true));
    assert.equal(await settles(kept.gate), false, "a run canceled before Tasks.Create says nothing about the shim");
    const borrower = take(reuse);
    assert.equal(borrower.group, early.group);
    borrower.end(ended(true, true));
    borrower.end(ended(true, true));
    assert.ok(await settles(kept.gate));
    assert.notEqual(take(reuse).group, borrower.group, "a group that was let go is not lent again");
    await reuse.close();
  });

  it("lets a group go when a borrower's task could not be deleted", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    const f = take(reuse);
    const kept = f.retire("f");
    take(reuse).retire("b").taskDone(false);
    assert.ok(await settles(kept.gate));
    assert.notEqual(take(reuse).group, f.group);
    await reuse.close();
  });

  it("lets a group go when a borrower ended without handing over and its task could not be deleted", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    const f = take(reuse);
    const kept = f.retire("f");
    // Canceled before Tasks.Create answered (so nothing says the shim is at fault), and the task that was made
    // all the same could not be deleted: the shim may still host it.
    try {
      take(reuse).end(ended(false, false));
      assert.ok(await settles(kept.gate), "the founder goes once the group is let go");
      assert.notEqual(take(reuse).group, f.group, "a shim that may host a task is lent again");
    } finally {
      await reuse.close();
    }
  });

  it("lends the most recently used group first, and lets idle ones go", async () => {
    const reuse = reuseShims({ idleMs: 150 });
    const [a, b] = [take(reuse), take(reuse)];
    const ka = a.retire("a");
    const kb = b.retire("b");
    // Sequential runs keep using b; a goes idle and is let go.
    for (let i = 0; i < 4; i++) {
      await delay(50);
      const r = take(reuse);
      assert.equal(r.group, b.group);
      r.retire(`r${i}`).taskDone(true);
    }
    assert.ok(await settles(ka.gate), "the idle group was not let go");
    assert.equal(await settles(kb.gate), false);
    await delay(250);
    assert.ok(await settles(kb.gate));
  });

  it("stops lending a group once its founder exited maxAgeMs ago", async () => {
    const reuse = reuseShims({ idleMs: 60_000, maxAgeMs: 100 });
    const f = take(reuse);
    const kept = f.retire("f");
    const r = take(reuse);
    assert.equal(r.group, f.group);
    await delay(150);
    const { taskDone } = r.retire("r");
    assert.equal(await settles(kept.gate), false, "not before the borrower's task is deleted");
    taskDone(true);
    assert.ok(await settles(kept.gate));
    assert.notEqual(take(reuse).group, f.group);
    await reuse.close();
  });

  it("founds nothing for a run with its own id, and releases a founder by id", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    const own = take(reuse, true);
    assert.equal(own.group, undefined, "a run with its own id founded a group");
    assert.deepEqual(own.labels, {});
    assert.equal(own.retire("mine").gate, undefined);
    const kept = take(reuse).retire("f");
    const borrowed = take(reuse, true);
    assert.ok(borrowed.group, "a run with its own id still borrows");
    assert.deepEqual(borrowed.labels, {});
    borrowed.retire("mine").taskDone(true);
    reuse.release("nobody");
    assert.equal(await settles(kept.gate), false);
    reuse.release("f");
    assert.ok(await settles(kept.gate));
  });

  it("lets every kept founder go at flush, and founds again afterwards", async () => {
    const reuse = reuseShims({ idleMs: 60_000 });
    const [a, b] = [take(reuse), take(reuse)];
    const [ka, kb] = [a.retire("a"), b.retire("b")];
    reuse.flush();
    assert.ok((await settles(ka.gate)) && (await settles(kb.gate)));
    const next = take(reuse);
    assert.ok(next.group && next.group !== a.group && next.group !== b.group);
    assert.ok(next.retire("c").gate, "a founder after flush keeps its task again");
    await reuse.close();
  });

  it("listens for beforeExit only while it keeps founders", async () => {
    const base = process.listeners("beforeExit");
    const one = reuseShims({ idleMs: 60_000 });
    const two = reuseShims({ idleMs: 60_000 });
    const k1 = take(one).retire("1");
    const k2 = take(two).retire("2");
    const added = process.listeners("beforeExit").filter((l) => !base.includes(l));
    assert.equal(added.length, 1);
    // As if the event loop ran dry (emitting the event would tell node:test the same).
    added[0]!(0);
    assert.ok((await settles(k1.gate)) && (await settles(k2.gate)));
    assert.equal(process.listenerCount("beforeExit"), base.length);
    // Still usable afterwards: a new run founds again.
    take(one).retire("3");
    assert.equal(process.listenerCount("beforeExit"), base.length + 1);
    await one.close();
    await two.close();
    assert.equal(process.listenerCount("beforeExit"), base.length);
  });
});
