import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { readdirSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { promisify } from "node:util";
import type { Tracer } from "@opentelemetry/api";
import { CanceledError, ExitError, UnavailableError } from "../../src/errors.js";
import { ContainerdExecutor } from "../../src/executor/executor.js";
import { bindMountable } from "../../src/executor/mountables.js";
import { createTestEnv, killShim, shimsOf, type TestEnv } from "../helpers/env.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { OwnContainerd } from "../helpers/own-containerd.js";
import { deadOwner } from "../helpers/owners.js";
import { Collect } from "../helpers/streams.js";

const run = promisify(execFile);
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("reliability under load and faults", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("rel");
  });
  after(async () => {
    await env.dispose();
  });

  it("200 runs, 8 at a time, 20% canceled at random moments, 10% failing: every outcome right, nothing left", async () => {
    let seed = 7;
    const rand = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const outcomes: string[] = [];
    const rss: number[] = [];
    let next = 0;
    const one = async (i: number) => {
      const kind = rand(10) < 2 ? (["before", "starting", "running", "teardown"] as const)[rand(4)]! : rand(10) < 1 ? "fail" : "ok";
      const ac = new AbortController();
      const stdout = new Collect();
      const script = kind === "fail" ? `exit ${1 + (i % 100)}` : kind === "running" ? "sleep 30" : kind === "teardown" ? "true" : `echo run-${i}`;
      if (kind === "before") ac.abort(new Error("before"));
      if (kind === "starting") setTimeout(() => ac.abort(new Error("starting")), rand(40));
      const p = env.executor.run({
        root: { source: bindMountable(env.rootfs) },
        process: { meta: { args: ["sh", "-c", script] }, stdout },
        signal: ac.signal,
        onStarted: () => {
          if (kind === "running") setTimeout(() => ac.abort(new Error("running")), rand(100));
          if (kind === "teardown") ac.abort(new Error("teardown"));
        },
      });
      const r = await p.then(
        (v) => ({ ok: true as const, v }),
        (e: unknown) => ({ ok: false as const, e }),
      );
      const reason = ac.signal.aborted ? (ac.signal.reason as Error).message : "";
      switch (kind) {
        case "ok":
          assert.ok(r.ok, `run ${i}: ${String(!r.ok && r.e)}`);
          assert.equal(stdout.text, `run-${i}\n`);
          break;
        case "fail":
          assert.ok(!r.ok && r.e instanceof ExitError && r.e.exitCode === 1 + (i % 100), `run ${i}: ${String(!r.ok && r.e)}`);
          break;
        case "before":
          assert.ok(!r.ok && r.e instanceof CanceledError, `run ${i}: ${String(!r.ok && r.e)}`);
          break;
        case "running":
          assert.ok(
            !r.ok && r.e instanceof ExitError && r.e.exitCode === 137 && (r.e.cause as Error).message === reason,
            `run ${i}: ${String(!r.ok && r.e)}`,
          );
          break;
        default:
          // Canceled while starting or tearing down: canceled, killed, or done if the exit won the race.
          assert.ok(
            r.ok || r.e instanceof CanceledError || (r.e instanceof ExitError && r.e.exitCode === 137),
            `run ${i} (${kind}): ${String(!r.ok && r.e)}`,
          );
      }
      outcomes.push(kind);
    };
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < 200) {
          const i = next++;
          await one(i);
          if (i % 25 === 0) rss.push(process.memoryUsage().rss);
        }
      }),
    );
    assert.equal(outcomes.length, 200);
    assert.ok(outcomes.filter((k) => k !== "ok" && k !== "fail").length >= 20, "too few cancellations to mean anything");
    const growth = (Math.max(...rss.slice(2)) - rss[1]!) / 2 ** 20;
    assert.ok(growth < 64, `RSS grew ${growth.toFixed(1)} MiB over the load`);
    await env.assertClean();
  });

  it("a cancel at each phase of a run, and just after it, ends the run and leaves nothing", async () => {
    const phases = ["Environment prepared", "Spec generated", "Container record created", "IO created", "Container created", "Container started"];
    let trigger: { phase: string; later: boolean; ac: AbortController } | undefined;
    const span = {
      addEvent: (name: string) => {
        const t = trigger;
        if (t?.phase === name) {
          // On the event itself (before the next step starts), or a moment later (while it is in flight).
          if (t.later) setImmediate(() => t.ac.abort(new Error(name)));
          else t.ac.abort(new Error(name));
        }
        return span;
      },
      end: () => {},
    };
    await using ex = await ContainerdExecutor.create({
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "host",
      tracer: { startSpan: () => span } as unknown as Tracer,
    });
    for (const phase of phases) {
      for (const later of [false, true]) {
        for (let i = 0; i < 3; i++) {
          const ac = new AbortController();
          trigger = { phase, later, ac };
          const r = await ex
            .run({
              root: { source: bindMountable(env.rootfs) },
              process: { meta: { args: ["sleep", "30"] }, stdout: new Collect() },
              signal: ac.signal,
            })
            .then(
              () => undefined,
              (e: unknown) => e,
            );
          const what = `canceled at "${phase}"${later ? " (a moment later)" : ""}: ${String(r)}`;
          assert.ok(r instanceof CanceledError || (r instanceof ExitError && r.exitCode === 137), what);
          if (phase === "Container started") assert.ok(r instanceof ExitError, what);
        }
      }
    }
    trigger = undefined;
    await ex.settled();
    await env.assertClean();
  });

  it("prune removes the stopped runs a SIGKILLed executor kept for shim reuse, and their shims exit", async () => {
    const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    const script = `
      const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
      const { bindMountable } = await import(${mod("../../src/executor/mountables.js")});
      const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)},
        fifoRoot: ${JSON.stringify(env.fifoRoot)}, defaultNetwork: "host" });
      const run = () => ex.run({ root: { source: bindMountable(${JSON.stringify(env.rootfs)}) }, process: { meta: { args: ["true"] } } });
      await Promise.all([run(), run()]);
      await run();
      await ex.settled({ keepReusableShims: true });
      process.stdout.write("kept");
      setInterval(() => {}, 1000);`;
    const { spawn } = await import("node:child_process");
    const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => d.toString().includes("kept") && resolve());
      child.on("exit", (code) => reject(new Error(`the child exited (${code}) before keeping its shims`)));
    });
    const kept = (await env.client.containers.list()).map((c) => c.id);
    assert.equal(kept.length, 2, `two founders kept: ${kept.join(" ")}`);
    assert.equal(shimsOf(env.namespace).length, 2);
    const exited = new Promise((r) => child.on("exit", r));
    child.kill("SIGKILL");
    await exited;
    const removed = await env.executor.prune();
    for (const id of kept) assert.ok(removed.includes(`container ${id}`), removed.join(", "));
    await env.assertClean();
  });

  for (const phase of ["Environment prepared", "Container record created", "IO created", "Container created", "Container started"]) {
    it(`prune leaves nothing after the executor is SIGKILLed at "${phase}"`, async () => {
      const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
      // The child dies on the span event of the phase: what it made so far is orphaned for prune to find.
      const script = `
        const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
        const { tmpfsMountable } = await import(${mod("../../src/executor/mountables.js")});
        const span = { addEvent: (name) => { if (name === ${JSON.stringify(phase)}) process.kill(process.pid, "SIGKILL"); return span; }, end: () => {} };
        const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)},
          fifoRoot: ${JSON.stringify(env.fifoRoot)}, defaultNetwork: "host", tracer: { startSpan: () => span } });
        const roBind = { mount: async () => ({ mounts: [{ type: "bind", source: ${JSON.stringify(env.rootfs)}, options: ["rbind", "ro"] }], release: async () => {} }) };
        await ex.run({ root: { source: roBind }, mounts: [{ source: tmpfsMountable(), dest: "/tmp" }],
          process: { meta: { args: ["sleep", "30"], hostname: "dying", extraHosts: [{ host: "h", ip: "10.0.0.1" }] }, stdout: process.stdout, stderr: process.stderr } });`;
      const { spawn } = await import("node:child_process");
      await new Promise<void>((resolve) =>
        spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "ignore", "inherit"] }).on("exit", () => resolve()),
      );
      const removed = await env.executor.prune();
      assert.ok(removed.length > 0, "prune found nothing to remove");
      await env.assertClean();
    });
  }

  it("prune recovers a task whose container record is gone (orphaned) and whose owner died", async () => {
    const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    const script = `
      const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
      const { bindMountable } = await import(${mod("../../src/executor/mountables.js")});
      let ex;
      const span = { addEvent: (name) => {
        if (name === "Container started") {
          // Orphan the task the way a careless client would, then die.
          ex.client.containers.delete(ex.runs[0]).then(() => process.kill(process.pid, "SIGKILL"));
        }
        return span; }, end: () => {} };
      ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)},
        fifoRoot: ${JSON.stringify(env.fifoRoot)}, defaultNetwork: "host", tracer: { startSpan: () => span } });
      await ex.run({ root: { source: bindMountable(${JSON.stringify(env.rootfs)}) }, process: { meta: { args: ["sleep", "30"] } } });`;
    const { spawn } = await import("node:child_process");
    await new Promise<void>((resolve) =>
      spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "ignore", "inherit"] }).on("exit", () => resolve()),
    );
    const tasks = await env.client.tasks.list();
    assert.equal(tasks.length, 1, "the child should have left one orphaned task");
    assert.deepEqual(await env.client.containers.list(), []);
    const removed = await env.executor.prune();
    assert.ok(
      removed.some((l) => l.startsWith("orphaned task ")),
      removed.join("\n"),
    );
    await env.assertClean();
  });

  it("prune keeps the FIFO dir of a run whose record is still being created, and removes an ownerless one", async () => {
    const { createRunDir, fifoDir } = await import("../../src/executor/run-dirs.js");
    const fifos = fifoDir(env.fifoRoot, env.namespace);
    // A run of this (live) process between its FIFOs and its container record: a run dir names the owner.
    const runDir = await createRunDir(env.stateDir, env.namespace, "starting-1");
    await mkdir(join(fifos, "starting-1-0123456789ab"), { recursive: true });
    await mkdir(join(fifos, "starting-1.exec0123456789abcdef-0123456789ab"), { recursive: true });
    // Nobody's: no container, no run dir.
    await mkdir(join(fifos, "gone-2-ba9876543210"), { recursive: true });
    const removed = await env.executor.prune();
    assert.deepEqual(removed, [`FIFO dir ${join(fifos, "gone-2-ba9876543210")}`]);
    const { readdir, rm } = await import("node:fs/promises");
    assert.deepEqual((await readdir(fifos)).sort(), ["starting-1-0123456789ab", "starting-1.exec0123456789abcdef-0123456789ab"]);
    await rm(runDir, { recursive: true });
    await rm(join(fifos, "starting-1-0123456789ab"), { recursive: true });
    await rm(join(fifos, "starting-1.exec0123456789abcdef-0123456789ab"), { recursive: true });
    await env.assertClean();
  });

  it("prune removes retired and half-made run dirs of dead owners without reaching into mounts below them", async () => {
    const { writeFile, readdir, readFile, rm } = await import("node:fs/promises");
    const runs = join(env.stateDir, "runs", env.namespace);
    const dead = deadOwner();
    const retired = join(runs, ".retired-gone-0123456789ab");
    const half = join(runs, ".new-gone-0123456789ab");
    const live = join(runs, ".retired-live-0123456789ab");
    for (const [dir, owner] of [
      [retired, dead],
      [half, dead],
      [live, (await import("../../src/util/owner.js")).ownerId()],
    ] as const) {
      await mkdir(dir, { recursive: true });
      await writeFile(join(dir, "owner"), owner);
    }
    // A host directory still bind-mounted in a dead run's dir (its unmount never happened): detached, not emptied.
    const host = join(env.stateDir, "precious");
    await mkdir(host);
    await writeFile(join(host, "file"), "keep");
    await mkdir(join(retired, "mount-x"));
    await run("mount", ["--bind", host, join(retired, "mount-x")]);
    const removed = await env.executor.prune();
    assert.deepEqual(removed.filter((l) => l.startsWith("run dir ")).sort(), [`run dir ${half}`, `run dir ${retired}`]);
    assert.deepEqual(await readdir(runs), [".retired-live-0123456789ab"]);
    assert.equal(await readFile(join(host, "file"), "utf8"), "keep");
    await rm(live, { recursive: true });
    await rm(host, { recursive: true });
    await env.assertClean();
  });

  it("hostile input: huge env, missing rootfs, ids with .., an unusable state dir, each typed or contained", async () => {
    const env100k = Array.from({ length: 100_000 }, (_, i) => `V${i}=${i}`);
    const out = new Collect();
    await env.executor.run({
      root: { source: bindMountable(env.rootfs) },
      process: { meta: { args: ["sh", "-c", "env | grep -c '^V'"], env: env100k }, stdout: out },
    });
    assert.equal(out.text, "100000\n");
    const { InvalidArgumentError, FailedPreconditionError } = await import("../../src/errors.js");
    await assert.rejects(
      env.executor.run({ root: { source: bindMountable("/nonexistent/rootfs") }, process: { meta: { args: ["true"] } } }),
      (e: unknown) => e instanceof InvalidArgumentError && /does not exist/.test(e.message),
    );
    for (const id of ["..", "a/../b", "../x", "x".repeat(300)]) {
      await assert.rejects(
        env.executor.run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } }),
        InvalidArgumentError,
      );
    }
    // A state dir on a read-only filesystem (the test's own read-only tmpfs).
    const ro = join(env.stateDir, "read-only");
    await mkdir(ro);
    await run("mount", ["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro]);
    try {
      await assert.rejects(
        ContainerdExecutor.create({ namespace: env.namespace, root: join(ro, "state"), fifoRoot: env.fifoRoot }),
        (e: unknown) => e instanceof FailedPreconditionError && /state dir .* is not usable/.test(e.message),
      );
    } finally {
      await run("umount", [ro]);
    }
    await env.assertClean();
  });

  it("a run whose shim dies gets a clear error, and nothing is left", async () => {
    const id = env.uniqueId("shim");
    let started!: () => void;
    const s = new Promise<void>((r) => (started = r));
    const p = env.executor
      .run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sleep", "30"] } }, onStarted: () => started() })
      .catch((e: unknown) => e);
    await s;
    const shims = shimsOf(env.namespace);
    assert.equal(shims.length, 1, "expected exactly our run's shim");
    const removeSocket = killShim(env.namespace, id, shims[0]!); // the shim of the test's own container
    const err = await p;
    assert.ok(err instanceof ExitError, String(err));
    assert.ok(err.exitCode === 255 || err.exitCode === 137, `exit code ${err.exitCode}`);
    await env.assertClean();
    await removeSocket();
  });
});

describe("containerd restarts", () => {
  let ctd: OwnContainerd;
  let env: TestEnv;
  before(async () => {
    ctd = new OwnContainerd("restart");
    await ctd.start();
    env = await createTestEnv("restart");
  });
  after(async () => {
    await ctd.dispose();
    await env.dispose().catch(() => {});
  });

  it("a run survives a containerd restart and reports its real exit code", async () => {
    await using ex = await ContainerdExecutor.create({
      address: ctd.address,
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "host",
    });
    let started!: () => void;
    const s = new Promise<void>((r) => (started = r));
    const stdout = new Collect();
    const p = ex
      .run({
        root: { source: bindMountable(env.rootfs) },
        process: { meta: { args: ["sh", "-c", "sleep 2; echo survived; exit 7"] }, stdout },
        onStarted: () => started(),
      })
      .catch((e: unknown) => e);
    await s;
    await ctd.stop();
    await delay(500);
    await ctd.start();
    const err = await p;
    assert.ok(err instanceof ExitError && err.exitCode === 7, String(err));
    assert.equal(stdout.text, "survived\n");
    await ex.settled();
    const client = ex.client;
    assert.deepEqual(
      (await client.containers.list()).map((c) => c.id),
      [],
    );
    assert.deepEqual(
      (await client.tasks.list()).map((t) => t.id),
      [],
    );
    await client.namespaces.delete(env.namespace).catch(() => {});
  });

  // The second case keeps its output open: before the fix the run waited for that output to end (300 s, past the
  // test's timeout), though no exit had been seen. Cleanup is bounded either way.
  for (const [what, args] of [
    ["", ["sleep", "1"]],
    [" even while the container keeps its output open", ["sh", "-c", "echo hi; exec sleep 300"]],
  ] as const) {
    it(`gives up with UnavailableError when containerd stays away past the bound${what}`, { timeout: 90_000 }, async () => {
      await using ex = await ContainerdExecutor.create({
        address: ctd.address,
        namespace: env.namespace,
        root: env.stateDir,
        fifoRoot: env.fifoRoot,
        defaultNetwork: "host",
        reconnectBoundMs: 1500,
      });
      let started!: () => void;
      const s = new Promise<void>((r) => (started = r));
      const stdout = new Collect();
      const p = ex
        .run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: [...args] }, stdout }, onStarted: () => started() })
        .catch((e: unknown) => e);
      await s;
      await ctd.stop();
      const err = await p;
      assert.ok(err instanceof UnavailableError, String(err));
      assert.match(err.message, /containerd is not reachable/);
      // The container may still run and write into its run dir: that stays until its task is deleted.
      const runs = join(env.stateDir, "runs", env.namespace);
      const runDirs = () => readdirSync(runs).filter((n) => !n.startsWith("."));
      assert.equal(runDirs().length, 1, "the run dir of a task that may live on was removed");
      // When containerd is back, the executor finishes the cleanup it could not do (killing the task first),
      // and then removes the run dir.
      await ctd.start();
      let left: string[] = ["?"];
      for (let i = 0; i < 100 && (left.length > 0 || runDirs().length > 0); i++) {
        await delay(200);
        left = (await ex.client.containers.list().catch(() => [{ id: "?" }])).map((c) => c.id);
      }
      assert.deepEqual(left, []);
      await ex.settled();
      assert.deepEqual(runDirs(), []);
      assert.deepEqual(
        (await ex.client.tasks.list()).map((t) => t.id),
        [],
      );
      await ex.client.namespaces.delete(env.namespace).catch(() => {});
    });
  }
});
