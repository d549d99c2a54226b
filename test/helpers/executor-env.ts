import assert from "node:assert/strict";
import { readdir } from "node:fs/promises";
import { ContainerdExecutor, type ExecutorOptions } from "../../src/executor/executor.js";
import { createTestEnv, type TestEnv } from "./env.js";

export interface ExecutorEnv extends TestEnv {
  executor: ContainerdExecutor;
  /** assertNoLeaks, plus the executor's own state: no per-run hosts files, no local mounts. */
  assertClean(): Promise<void>;
}

export async function createExecutorEnv(name: string, options: ExecutorOptions = {}): Promise<ExecutorEnv> {
  const env = await createTestEnv(name);
  const executor = await ContainerdExecutor.create({
    namespace: env.namespace,
    root: env.stateDir,
    fifoRoot: env.fifoRoot,
    // Executor semantics are tested on the host network; tests/integration/network.test.ts covers the rest.
    defaultNetwork: "host",
    ...options,
  });
  const dispose = env.dispose;
  return Object.assign(env, {
    executor,
    async assertClean() {
      // Finished runs' records are deleted in the background; that cleanup must complete, too.
      await executor.settled();
      await env.assertNoLeaks();
      const files = await readdir(env.stateDir);
      assert.deepEqual(
        files.filter((f) => f.startsWith("hosts.") || f.endsWith(".tmp")),
        [],
        "per-run state files left",
      );
      assert.deepEqual(await readdir(`${env.stateDir}/runs/${env.namespace}`).catch(() => []), [], "run dirs left");
    },
    async dispose() {
      await executor.close();
      await dispose();
    },
  });
}
