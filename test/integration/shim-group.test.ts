import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ExitError } from "../../src/errors.js";
import { bindMountable } from "../../src/executor/mountables.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { shimsOf } from "../helpers/env.js";
import { Collect } from "../helpers/streams.js";

describe("shim grouping (opt-in)", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("grp", { shimGroup: true });
  });
  after(async () => {
    await env.dispose();
  });

  it("runs and execs through one shared shim, and leaves nothing at close", async () => {
    const run = (script: string) => {
      const stdout = new Collect();
      return env.executor.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sh", "-c", script] }, stdout } }).then(() => stdout.text);
    };
    assert.equal(await run("echo first"), "first\n");
    let started!: (id: string) => void;
    const s = new Promise<string>((r) => (started = r));
    const ac = new AbortController();
    const long = env.executor
      .run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sleep", "30"] } }, signal: ac.signal, onStarted: ({ id }) => started(id) })
      .catch((e: unknown) => e);
    const id = await s;
    const outs = await Promise.all(Array.from({ length: 4 }, (_, i) => run(`echo ${i}`)));
    assert.deepEqual(outs, ["0\n", "1\n", "2\n", "3\n"]);
    await env.executor.settled();
    assert.equal(shimsOf(env.namespace).length, 1, "grouped runs should share one shim");
    const out = new Collect();
    await env.executor.exec(id, { meta: { args: ["echo", "exec"] }, stdout: out });
    assert.equal(out.text, "exec\n");
    await assert.rejects(run("exit 3"), (e: unknown) => e instanceof ExitError && e.exitCode === 3);
    ac.abort();
    assert.ok((await long) instanceof ExitError);
    await env.executor.settled();
    // Only the anchor is left while the executor is open; close removes it and the shim goes.
    assert.equal((await env.client.containers.list()).length, 1);
    await env.executor.close();
    await env.assertClean();
  });
});
