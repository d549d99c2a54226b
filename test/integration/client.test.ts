import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { ContainerdClient } from "../../src/containerd/client.js";
import { jsonAny, SPEC_TYPE_URL } from "../../src/containerd/types.js";
import {
  AlreadyExistsError,
  CanceledError,
  CtrexecError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnknownError,
} from "../../src/errors.js";
import { defaultSpec } from "../../src/oci/defaults.js";
import { createTestEnv, type TestEnv } from "../helpers/env.js";

describe("containerd client against the real daemon", () => {
  let env: TestEnv;
  before(async () => {
    env = await createTestEnv("client");
  });
  after(async () => {
    await env.assertNoLeaks();
    await env.dispose();
  });

  const newContainer = (id: string, args = ["/bin/sleep", "30"]) => {
    const spec = defaultSpec(env.namespace, id);
    spec.process!.args = args;
    return { id, runtime: { name: "io.containerd.runc.v2" }, spec: jsonAny(SPEC_TYPE_URL, spec) };
  };

  it("answers Version", async () => {
    const v = await env.client.version();
    assert.match(v.version, /^\d+\.\d+/);
  });

  it("creates, gets, lists and deletes a container record with labels", async () => {
    const id = env.uniqueId("rec");
    const created = await env.client.containers.create({ ...newContainer(id), labels: { "ctrexec.test": "yes" } });
    assert.equal(created.id, id);
    const got = await env.client.containers.get(id);
    assert.deepEqual(got.labels, { "ctrexec.test": "yes" });
    assert.equal(got.runtime?.name, "io.containerd.runc.v2");
    assert.equal(got.spec?.typeUrl, SPEC_TYPE_URL);
    const listed = await env.client.containers.list([`labels."ctrexec.test"==yes`]);
    assert.deepEqual(
      listed.map((c) => c.id),
      [id],
    );
    await env.client.containers.delete(id);
  });

  it("maps an unknown container to NotFoundError", async () => {
    const err = await env.client.containers.get("nosuchcontainer").catch((e: unknown) => e);
    assert.ok(err instanceof NotFoundError, String(err));
    assert.equal(err.code, "NOT_FOUND");
    assert.match(err.message, /nosuchcontainer/);
    const taskErr = await env.client.tasks.get({ containerId: "nosuchcontainer" }).catch((e: unknown) => e);
    assert.ok(taskErr instanceof NotFoundError, String(taskErr));
  });

  it("maps a duplicate id to AlreadyExistsError", async () => {
    const id = env.uniqueId("dup");
    await env.client.containers.create(newContainer(id));
    try {
      const err = await env.client.containers.create(newContainer(id)).catch((e: unknown) => e);
      assert.ok(err instanceof AlreadyExistsError, String(err));
      assert.equal(err.code, "ALREADY_EXISTS");
    } finally {
      await env.client.containers.delete(id);
    }
  });

  it("maps an invalid id to InvalidArgumentError", async () => {
    const err = await env.client.containers.create(newContainer("a/b")).catch((e: unknown) => e);
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.equal(err.code, "INVALID_ARGUMENT");
    assert.match(err.message, /identifier "a\/b"/);
  });

  it("maps a missing namespace header to FailedPreconditionError", async () => {
    const noNamespace = env.client.withNamespace("");
    const err = await noNamespace.containers.list().catch((e: unknown) => e);
    assert.ok(err instanceof FailedPreconditionError, String(err));
    assert.match(err.message, /namespace is required/);
  });

  it("maps a runtime failure to UnknownError with the daemon's message", async () => {
    const id = env.uniqueId("nobin");
    await env.client.containers.create(newContainer(id, ["/bin/does-not-exist"]));
    try {
      const err = await env.client.tasks
        .create({ containerId: id, rootfs: [{ type: "bind", source: env.rootfs, options: ["rbind", "ro"] }] })
        .catch((e: unknown) => e);
      assert.ok(err instanceof UnknownError, String(err));
      assert.equal(err.code, "UNKNOWN");
      assert.match(err.message, /does-not-exist/);
    } finally {
      await env.client.containers.delete(id);
    }
  });

  it("maps a call deadline to DeadlineExceededError and an abort to CanceledError", async () => {
    const id = env.uniqueId("sleep");
    await env.client.containers.create(newContainer(id));
    try {
      await env.client.tasks.create({
        containerId: id,
        rootfs: [{ type: "bind", source: env.rootfs, options: ["rbind", "ro"] }],
      });
      await env.client.tasks.start({ containerId: id });

      const started = Date.now();
      const late = await env.client.tasks.wait({ containerId: id }, { timeoutMs: 200 }).catch((e: unknown) => e);
      // containerd sometimes answers first with UNKNOWN "context deadline exceeded" (the server's copy of it).
      assert.ok(late instanceof DeadlineExceededError || (late instanceof UnknownError && /deadline/.test(late.message)), String(late));
      assert.ok(Date.now() - started < 5000);

      const ac = new AbortController();
      const reason = new Error("test abort");
      const waiting = env.client.tasks.wait({ containerId: id }, { signal: ac.signal });
      setTimeout(() => ac.abort(reason), 50);
      const canceled = await waiting.catch((e: unknown) => e);
      assert.ok(canceled instanceof CanceledError, String(canceled));
      assert.equal(canceled.cause, reason);

      const already = await env.client.version({ signal: ac.signal }).catch((e: unknown) => e);
      assert.ok(already instanceof CanceledError);
    } finally {
      await env.client.tasks.kill({ containerId: id, signal: 9, all: true }).catch(() => {});
      await env.client.tasks.wait({ containerId: id }, { timeoutMs: 10_000 });
      await env.client.tasks.delete(id);
      await env.client.containers.delete(id);
    }
  });

  it("streams task events for its own namespace only", async () => {
    const id = env.uniqueId("ev");
    const ac = new AbortController();
    const seen: string[] = [];
    const events = (async () => {
      for await (const e of env.client.events.subscribe([`topic~="/tasks/"`], { signal: ac.signal })) {
        assert.equal(e.namespace, env.namespace);
        if (e.event && "containerId" in e.event && e.event.containerId === id) {
          seen.push(e.event.type);
          if (e.event.type === "TaskExit") {
            assert.equal(e.event.exitStatus, 7);
            ac.abort();
          }
        }
      }
    })().catch((e: unknown) => {
      if (!(e instanceof CanceledError)) throw e;
    });
    await new Promise((r) => setTimeout(r, 100));
    await env.client.containers.create(newContainer(id, ["/bin/sh", "-c", "exit 7"]));
    await env.client.tasks.create({
      containerId: id,
      rootfs: [{ type: "bind", source: env.rootfs, options: ["rbind", "ro"] }],
    });
    const exited = env.client.tasks.wait({ containerId: id });
    await env.client.tasks.start({ containerId: id });
    assert.equal((await exited).exitStatus, 7);
    await events;
    await env.client.tasks.delete(id);
    await env.client.containers.delete(id);
    assert.ok(seen.indexOf("TaskStart") >= 0, `events seen: ${seen.join(",")}`);
    assert.ok(seen.indexOf("TaskStart") < seen.indexOf("TaskExit"), `events seen: ${seen.join(",")}`);
  });
});

describe("containerd client lifecycle", () => {
  it("fails fast with a typed, helpful UnavailableError", async () => {
    await using client = new ContainerdClient({ address: "/run/ctrexec-test-nonexistent/containerd.sock" });
    const started = Date.now();
    const err = await client.version().catch((e: unknown) => e);
    assert.ok(err instanceof UnavailableError, String(err));
    assert.ok(CtrexecError.is(err));
    assert.equal(err.code, "UNAVAILABLE");
    assert.match(err.message, /containerd is not reachable at \/run\/ctrexec-test-nonexistent\/containerd\.sock \(no socket at that path\)/);
    assert.match(err.message, /Is containerd running\?/);
    assert.ok(Date.now() - started < 3000, "took too long to fail");
  });

  /**
   * Runs `body` in a fresh Node process with a ContainerdClient `c`; resolves with its exit code and how long it
   * lived. A timer exits with 3 after 5 s without keeping the process alive itself.
   */
  async function clientProcess(body: string): Promise<{ code: number; ms: number }> {
    const { execFile } = await import("node:child_process");
    const clientModule = new URL("../../src/containerd/client.js", import.meta.url).href;
    const script = `
      const { ContainerdClient } = await import(${JSON.stringify(clientModule)});
      const c = new ContainerdClient();
      ${body}
      setTimeout(() => { console.log("still alive"); process.exit(3); }, 5000).unref();`;
    const started = Date.now();
    const code = await new Promise<number>((resolve) => {
      execFile(process.execPath, ["--input-type=module", "-e", script], (err) => resolve(err ? ((err as { code?: number }).code ?? 1) : 0));
    });
    return { code, ms: Date.now() - started };
  }

  it("cancels calls in flight on close, so the process can exit", async () => {
    const { code, ms } = await clientProcess(`
      await c.version();
      // A long-blocking stream keeps the connection (and so the process) alive until it is canceled.
      const stream = (async () => { for await (const e of c.events.subscribe()) {} })();
      await new Promise((r) => setTimeout(r, 200));
      await c.close();
      await stream.then(() => { throw new Error("stream ended without an error"); }, (e) => {
        if (e.code !== "CANCELED") throw e;
      });`);
    assert.equal(code, 0);
    assert.ok(ms < 4000, "the client kept the process alive");
  });

  it("keeps the process alive for a subscription, unless it is a background one", async () => {
    const subscribe = (options: string) => `
      void (async () => { for await (const e of c.events.subscribe([], ${options})) {} })().catch(() => {});
      await c.version();`;
    assert.equal((await clientProcess(subscribe("{}"))).code, 3, "a subscription must keep its process alive");
    const { code, ms } = await clientProcess(subscribe("{ background: true }"));
    assert.equal(code, 0);
    assert.ok(ms < 4000, "a background subscription kept the process alive");
  });

  it("does not keep the process alive while idle, even unclosed", async () => {
    const { code, ms } = await clientProcess(`
      await c.version();
      await Promise.all([c.version(), c.namespaces.list()]);`);
    assert.equal(code, 0);
    assert.ok(ms < 4000, "an idle connection kept the process alive");
  });

  it("refuses calls after close", async () => {
    const client = new ContainerdClient({ address: "/run/ctrexec-test-nonexistent/containerd.sock" });
    await client.close();
    await client.close();
    await assert.rejects(client.version(), CanceledError);
  });
});
