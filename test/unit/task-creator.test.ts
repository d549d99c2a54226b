import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { ContainerdClient } from "../../src/containerd/client.js";
import { TaskCreator } from "../../src/containerd/task-creator.js";
import type { CreateTaskRequest } from "../../src/containerd/types.js";
import type { Logger } from "../../src/util/logger.js";

describe("TaskCreator", () => {
  /** A client whose Tasks.Create answers with `answers` in turn (an Error rejects), recording each request. */
  function fake(answers: (Error | undefined)[]) {
    const requests: CreateTaskRequest[] = [];
    const warnings: string[] = [];
    const client = {
      tasks: {
        create: (r: CreateTaskRequest) => {
          requests.push(r);
          const a = answers.shift();
          return a ? Promise.reject(a) : Promise.resolve({ containerId: r.containerId, pid: 1 });
        },
      },
    } as unknown as ContainerdClient;
    const logger: Logger = { debug() {}, info() {}, warn: (m: string) => void warnings.push(m), error() {} };
    return { client, logger, requests, warnings };
  }

  it("passes the launcher as runtime_path, and nothing without one", async () => {
    const f = fake([undefined, undefined]);
    await new TaskCreator(f.client, "/opt/l", f.logger).create({ containerId: "a" });
    await new TaskCreator(f.client, undefined, f.logger).create({ containerId: "b" });
    assert.deepEqual(f.requests, [{ containerId: "a", runtimePath: "/opt/l" }, { containerId: "b" }]);
  });

  it("drops a launcher containerd cannot run, once, and creates the task without it", async () => {
    const missing = new Error(
      "failed to start shim: failed to resolve runtime path: invalid custom binary path: stat /opt/l: no such file or directory",
    );
    const f = fake([missing, undefined, undefined]);
    const tasks = new TaskCreator(f.client, "/opt/l", f.logger);
    await tasks.create({ containerId: "a" });
    await tasks.create({ containerId: "b" });
    assert.deepEqual(f.requests, [{ containerId: "a", runtimePath: "/opt/l" }, { containerId: "a" }, { containerId: "b" }]);
    assert.equal(f.warnings.length, 1);
    const denied = fake([new Error("start failed: : fork/exec /opt/l: permission denied"), undefined]);
    await new TaskCreator(denied.client, "/opt/l", denied.logger).create({ containerId: "c" });
    assert.deepEqual(
      denied.requests.map((r) => r.runtimePath),
      ["/opt/l", undefined],
    );
  });

  it("passes every other failure on, and keeps the launcher", async () => {
    const other = new Error('OCI runtime create failed: exec: "nope": executable file not found in $PATH');
    const f = fake([other, undefined]);
    const tasks = new TaskCreator(f.client, "/opt/l", f.logger);
    await assert.rejects(tasks.create({ containerId: "a" }), (e: unknown) => e === other);
    await tasks.create({ containerId: "b" });
    assert.deepEqual(
      f.requests.map((r) => r.runtimePath),
      ["/opt/l", "/opt/l"],
    );
    assert.deepEqual(f.warnings, []);
  });
});
