import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable } from "node:stream";
import { after, afterEach, before, describe, it } from "node:test";
import type { Attributes, Span, Tracer } from "@opentelemetry/api";
import { ContainerdClient } from "../../src/containerd/client.js";
import {
  AlreadyExistsError,
  CanceledError,
  ContainerExitedError,
  ExitError,
  InvalidArgumentError,
  NotFoundError,
  StartError,
  UnavailableError,
} from "../../src/errors.js";
import { ContainerdExecutor, type ExecutorOptions } from "../../src/executor/executor.js";
import { bindMountable, tmpfsMountable } from "../../src/executor/mountables.js";
import type { ProcessInfo, ProcessMeta, RunRequest, WinSize } from "../../src/executor/types.js";
import { parseMountinfo } from "../../src/fs/mountinfo.js";
import { Channel } from "../../src/util/channel.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { Collect, HashSink, repeatedDigest } from "../helpers/streams.js";

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("ContainerdExecutor behaviour (real containerd)", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("exec");
  });
  afterEach(async () => {
    await env.assertClean();
  });
  after(async () => {
    await env.dispose();
  });

  const run = (meta: Partial<ProcessMeta> & { args: string[] }, extra: Partial<RunRequest> & Partial<ProcessInfo> = {}) => {
    const { stdin, stdout, stderr, resize, signals, ...req } = extra;
    return env.executor.run({
      root: { source: bindMountable(env.rootfs) },
      ...req,
      process: {
        meta,
        stdin: stdin ?? null,
        stdout: stdout ?? null,
        stderr: stderr ?? null,
        ...(resize ? { resize } : {}),
        ...(signals ? { signals } : {}),
      },
    });
  };
  const sh = (script: string, meta: Partial<ProcessMeta> = {}, extra: Partial<RunRequest> & Partial<ProcessInfo> = {}) =>
    run({ args: ["sh", "-c", script], ...meta }, extra);
  async function output(script: string, meta: Partial<ProcessMeta> = {}, extra: Partial<RunRequest> & Partial<ProcessInfo> = {}) {
    const stdout = new Collect();
    const stderr = new Collect();
    await sh(script, meta, { stdout, stderr, ...extra });
    return stdout.text;
  }
  /** Starts a long run in the background and resolves with its id once it runs. */
  async function background(script = "sleep 30", meta: Partial<ProcessMeta> = {}) {
    const id = env.uniqueId("bg");
    const ac = new AbortController();
    let started!: () => void;
    const running = new Promise<void>((r) => (started = r));
    const done = sh(script, meta, { id, signal: ac.signal, onStarted: () => started() }).catch((e: unknown) => e);
    await Promise.race([running, done]);
    return { id, ac, done };
  }

  describe("exit codes", () => {
    it("resolves with exit code 0 and usage", async () => {
      const r = await sh("true");
      assert.equal(r.exitCode, 0);
      assert.match(r.id, /^[a-z0-9]{25}$/);
    });

    for (const code of [1, 3, 99]) {
      it(`rejects with ExitError ${code}`, async () => {
        const err = await sh(`exit ${code}`).catch((e: unknown) => e);
        assert.ok(err instanceof ExitError, String(err));
        assert.equal(err.exitCode, code);
        assert.equal(err.message, `exit code: ${code}`);
        assert.equal(err.oomKilled, false);
      });
    }

    it("reports a signal death as 128+n", async () => {
      const signals = new Channel<NodeJS.Signals | number>();
      const err = await sh("sleep 30", {}, { signals, onStarted: () => signals.push(9) }).catch((e: unknown) => e);
      signals.close();
      assert.ok(err instanceof ExitError);
      assert.equal(err.exitCode, 137);
      assert.equal(err.signal, 9);
    });

    it("honours validExitCodes; empty means only 0", async () => {
      assert.equal((await sh("exit 1", { validExitCodes: [1] })).exitCode, 1);
      assert.equal((await sh("exit 3", { validExitCodes: [2, 3] })).exitCode, 3);
      await assert.rejects(sh("exit 0", { validExitCodes: [1] }), { message: "exit code: 0" });
      assert.equal((await sh("exit 0", { validExitCodes: [] })).exitCode, 0);
      await assert.rejects(sh("exit 2", { validExitCodes: [] }), ExitError);
    });
  });

  describe("IO", () => {
    it("keeps stdout and stderr apart and complete", async () => {
      const stdout = new Collect();
      const stderr = new Collect();
      await sh("echo out; echo err >&2; echo out2", {}, { stdout, stderr });
      assert.equal(stdout.text, "out\nout2\n");
      assert.equal(stderr.text, "err\n");
    });

    it("delivers 64 MiB of stdout byte-exact", async () => {
      const size = 64 * 1024 * 1024;
      const sink = new HashSink();
      await sh(`yes 0123456789abcdef | head -c ${size}`, {}, { stdout: sink });
      assert.equal(sink.bytes, size);
      assert.equal(sink.digest(), repeatedDigest("0123456789abcdef\n", size));
    });

    it("gives the memory of bulk output back once it ended (a fresh process, 512 MiB)", async () => {
      const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
      const script = `
        const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
        const { bindMountable } = await import(${mod("../../src/executor/mountables.js")});
        const { Writable } = await import("node:stream");
        const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)}, fifoRoot: ${JSON.stringify(env.fifoRoot)} });
        const run = (n) => ex.run({ root: { source: bindMountable(${JSON.stringify(env.rootfs)}) }, process: { meta: { args: ["head", "-c", String(n), "/dev/zero"] }, stdout: new Writable({ write(c, e, cb) { cb(); } }) } });
        await run(1 << 20);
        const before = process.memoryUsage().rss;
        await run(256 << 20);
        await run(256 << 20);
        await new Promise((r) => setTimeout(r, 400));
        // The last chunks' buffers are garbage that V8 collects at its next GC, which an idle test process
        // would not reach: make it happen, past the 250 ms trim, so that only the trim after a GC can help.
        gc({ type: "minor" });
        await new Promise((r) => setTimeout(r, 50));
        await new Promise((r) => setTimeout(r, 400));
        console.log(JSON.stringify({ before, after: process.memoryUsage().rss }));
        await ex.close();`;
      const out = await new Promise<string>((resolve, reject) =>
        execFile(process.execPath, ["--expose-gc", "--input-type=module", "-e", script], (err, stdout, stderr) =>
          err ? reject(new Error(stderr)) : resolve(stdout),
        ),
      );
      const { before, after } = JSON.parse(out) as { before: number; after: number };
      // Untrimmed, glibc keeps ~30-40 MB of freed chunks; trimmed, a few MB remain.
      assert.ok(after - before < 24 * 2 ** 20, `RSS grew by ${((after - before) / 2 ** 20).toFixed(1)} MB`);
    });

    it("feeds stdin to cat and ends it", async () => {
      const input = randomBytes(300_000);
      const stdout = new Collect();
      await run({ args: ["cat"] }, { stdin: Readable.from([input]), stdout });
      assert.ok(stdout.buffer.equals(input));
    });

    it("does not hang without stdin (nil) or with an empty one", async () => {
      assert.equal((await run({ args: ["cat"] }, { stdout: new Collect() })).exitCode, 0);
      assert.equal((await run({ args: ["cat"] }, { stdin: Readable.from([]), stdout: new Collect() })).exitCode, 0);
    });

    it("gives a TTY its initial size and follows resizes", async () => {
      const stdin = new PassThrough();
      const stdout = new Collect();
      const stderr = new Collect();
      const resize = new Channel<WinSize>();
      const done = run({ args: ["sh"], tty: true, consoleSize: { rows: 40, cols: 100 } }, { stdin, stdout, stderr, resize, onStarted: () => {} });
      stdin.write("stty size\n");
      await delay(300);
      resize.push({ rows: 60, cols: 120 });
      await delay(300);
      stdin.write("stty size; exit 7\n");
      const err = await done.catch((e: unknown) => e);
      resize.close();
      assert.ok(err instanceof ExitError && err.exitCode === 7, String(err));
      assert.match(stdout.text, /40 100\r\n/);
      assert.match(stdout.text, /60 120\r\n/);
      assert.equal(stderr.text, "", "a TTY merges stderr into stdout");
    });
  });

  describe("signals and cancellation", () => {
    it("forwards signals to the process (trap in sh)", async () => {
      const signals = new Channel<NodeJS.Signals | number>();
      const err = await sh(
        'trap "exit 99" HUP; while true; do sleep 0.1; done',
        {},
        {
          signals,
          onStarted: () => void delay(300).then(() => signals.push("SIGHUP")),
        },
      ).catch((e: unknown) => e);
      signals.close();
      assert.ok(err instanceof ExitError && err.exitCode === 99, String(err));
    });

    it("cancels a running process: 137 within 2 s, the reason as cause, nothing left", async () => {
      const ac = new AbortController();
      const reason = new Error("user canceled");
      let canceledAt = 0;
      const err = await sh(
        "sleep 60",
        {},
        {
          signal: ac.signal,
          onStarted: () =>
            void delay(100).then(() => {
              canceledAt = Date.now();
              ac.abort(reason);
            }),
        },
      ).catch((e: unknown) => e);
      assert.ok(err instanceof ExitError, String(err));
      assert.equal(err.exitCode, 137);
      assert.equal(err.cause, reason);
      assert.ok(Date.now() - canceledAt < 2000, `took ${Date.now() - canceledAt} ms`);
    });

    it("cancels a paused run and still removes everything", async () => {
      const ac = new AbortController();
      const id = env.uniqueId("paused");
      const err = await sh(
        "sleep 60",
        {},
        {
          id,
          signal: ac.signal,
          onStarted: () => void env.client.tasks.pause(id).then(() => ac.abort(new Error("stop"))),
        },
      ).catch((e: unknown) => e);
      // Either the kernel delivers SIGKILL to the frozen process (137), or the kill times out; cleanup must
      // resume, kill and delete the task either way (afterEach checks nothing is left).
      assert.ok(
        (err instanceof ExitError && err.exitCode === 137) || (err instanceof Error && err.message === "failed to kill process on cancel"),
        String(err),
      );
    });

    it("cancels before start without creating anything", async () => {
      let started = 0;
      const err = await sh("true", {}, { signal: AbortSignal.abort(new Error("early")), onStarted: () => started++ }).catch((e: unknown) => e);
      assert.ok(err instanceof CanceledError, String(err));
      assert.equal((err.cause as Error).message, "early");
      assert.equal(started, 0);
    });

    it("calls onStarted exactly once on success and never on failure", async () => {
      let n = 0;
      await sh("true", {}, { onStarted: () => n++ });
      assert.equal(n, 1);
      await sh("exit 1", {}, { onStarted: () => n++ }).catch(() => {});
      assert.equal(n, 2);
      await run({ args: ["/no/such/binary"] }, { onStarted: () => n++ }).catch(() => {});
      await run({ args: ["true"], user: "nosuchuser" }, { onStarted: () => n++ }).catch(() => {});
      assert.equal(n, 2);
    });
  });

  describe("exec", () => {
    it("runs with a user name, uid:gid, cwd, env and inherits the rest", async () => {
      const bg = await background("sleep 30", { env: ["FROM_RUN=1"] });
      try {
        const ex = async (meta: Partial<ProcessMeta> & { args: string[] }) => {
          const stdout = new Collect();
          await env.executor.exec(bg.id, { meta, stdout, stderr: new Collect() });
          return stdout.text.trim();
        };
        assert.equal(await ex({ args: ["id", "-un"], user: "daemon" }), "daemon");
        assert.equal(await ex({ args: ["id"], user: "1:1" }), "uid=1(daemon) gid=1(daemon) groups=1(daemon)");
        assert.equal(await ex({ args: ["pwd"], cwd: "/tmp" }), "/tmp");
        assert.match(await ex({ args: ["sh", "-c", "echo $FROM_RUN $A"], env: ["A=2"] }), /^1 2$/);
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
        assert.equal(await ex({ args: ["sh", "-c", "echo ${FROM_RUN:-unset}"], env: ["FROM_RUN"] }), "unset");
        assert.equal(await ex({ args: ["ps", "-o", "pid,comm"] }).then((o) => /^\s*1 sleep$/m.test(o)), true);
      } finally {
        bg.ac.abort();
        await bg.done;
      }
    });

    it("gives an exec a TTY with its initial size", async () => {
      const bg = await background();
      try {
        const stdout = new Collect();
        await env.executor.exec(bg.id, { meta: { args: ["stty", "size"], tty: true, consoleSize: { rows: 33, cols: 77 } }, stdout });
        assert.match(stdout.text, /^33 77\r\n$/);
      } finally {
        bg.ac.abort();
        await bg.done;
      }
    });

    it("writes stdin through an exec, and deletes each exec process after it exits", async () => {
      const bg = await background();
      try {
        let execId = "";
        await env.executor.exec(
          bg.id,
          { meta: { args: ["sh", "-c", "cat > /tmp/msg"] }, stdin: Readable.from(["hello"]) },
          { onStarted: (i) => (execId = i.execId) },
        );
        const stdout = new Collect();
        await env.executor.exec(bg.id, { meta: { args: ["cat", "/tmp/msg"] }, stdout });
        assert.equal(stdout.text, "hello");
        await env.executor.settled();
        await assert.rejects(env.client.tasks.get({ containerId: bg.id, execId }), NotFoundError);
      } finally {
        bg.ac.abort();
        await bg.done;
      }
    });

    it("reports exit codes, start failures and cancellation of execs; pid 1 keeps running", async () => {
      const bg = await background();
      try {
        await assert.rejects(env.executor.exec(bg.id, { meta: { args: ["sh", "-c", "exit 4"] } }), { exitCode: 4 });
        const nf = await env.executor.exec(bg.id, { meta: { args: ["bogus"] } }).catch((e: unknown) => e);
        assert.ok(nf instanceof StartError && nf.reason === "not-found", String(nf));
        const ac = new AbortController();
        const canceled = env.executor.exec(bg.id, { meta: { args: ["sleep", "30"] } }, { signal: ac.signal, onStarted: () => ac.abort() });
        await assert.rejects(canceled, { exitCode: 137 });
        const missingCwd = await env.executor.exec(bg.id, { meta: { args: ["true"], cwd: "/no/such/dir" } }).catch((e: unknown) => e);
        assert.ok(missingCwd instanceof StartError, String(missingCwd));
        const signals = new Channel<NodeJS.Signals | number>();
        const trapped = env.executor.exec(
          bg.id,
          { meta: { args: ["sh", "-c", 'trap "exit 111" INT; while true; do sleep 0.1; done'] }, signals },
          { onStarted: () => void delay(300).then(() => signals.push("SIGINT")) },
        );
        await assert.rejects(trapped, { exitCode: 111 });
        signals.close();
        await env.executor.exec(bg.id, { meta: { args: ["true"] } });
      } finally {
        bg.ac.abort();
        await bg.done;
      }
    });

    it("fails for an unknown id, a finished run and a bad user; waits for a run that is starting", async () => {
      await assert.rejects(env.executor.exec("nosuchrun", { meta: { args: ["true"] } }), (e: unknown) => {
        assert.ok(e instanceof NotFoundError);
        assert.equal(e.message, "container nosuchrun not found");
        return true;
      });
      const id = env.uniqueId("fin");
      await sh("true", {}, { id });
      await assert.rejects(env.executor.exec(id, { meta: { args: ["true"] } }), NotFoundError);

      const starting = env.uniqueId("starting");
      const ac = new AbortController();
      const runP = sh("sleep 30", {}, { id: starting, signal: ac.signal }).catch(() => {});
      const stdout = new Collect();
      await env.executor.exec(starting, { meta: { args: ["echo", "in"] }, stdout });
      assert.equal(stdout.text, "in\n");
      await assert.rejects(env.executor.exec(starting, { meta: { args: ["true"], user: "nosuch" } }), /unable to find user nosuch/);
      ac.abort();
      await runP;
    });

    it("tells an exec waiting for a run that failed to start how it ended", async () => {
      const id = env.uniqueId("failing");
      const runP = run({ args: ["/no/such/binary"] }, { id }).catch((e: unknown) => e);
      const err = await env.executor.exec(id, { meta: { args: ["true"] } }).catch((e: unknown) => e);
      assert.ok(err instanceof ContainerExitedError || err instanceof NotFoundError, String(err));
      assert.ok((await runP) instanceof StartError);
    });

    it("runs 40 execs at once into one container, at most 8 starting at a time in its shim", async () => {
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      const { ContainerdClient } = await import("../../src/containerd/client.js");
      const client = new ContainerdClient({ namespace: env.namespace });
      // Counts the Start calls in flight (containerd 1.6's shim stalls past ~20 at once: 13–25 s for 30).
      let inFlight = 0;
      let most = 0;
      const start = client.tasks.start.bind(client.tasks);
      client.tasks.start = async (...args) => {
        most = Math.max(most, ++inFlight);
        try {
          return await start(...args);
        } finally {
          inFlight--;
        }
      };
      const ex = await ContainerdExecutor.create({ client, root: env.stateDir, fifoRoot: env.fifoRoot, defaultNetwork: "host" });
      try {
        const ac = new AbortController();
        let started!: () => void;
        const running = new Promise<void>((r) => (started = r));
        const id = env.uniqueId("many");
        const main = ex
          .run({
            id,
            root: { source: bindMountable(env.rootfs) },
            process: { meta: { args: ["sleep", "60"] } },
            signal: ac.signal,
            onStarted: () => started(),
          })
          .catch((e: unknown) => e);
        await running;
        most = 0;
        const outs = await Promise.all(
          Array.from({ length: 40 }, async (_, i) => {
            const stdout = new Collect();
            await ex.exec(id, { meta: { args: ["echo", `${i}`] }, stdout });
            return stdout.text;
          }),
        );
        assert.deepEqual(
          outs,
          Array.from({ length: 40 }, (_, i) => `${i}\n`),
        );
        assert.ok(most > 1 && most <= 8, `${most} exec Starts were in flight at once`);
        ac.abort();
        assert.ok((await main) instanceof ExitError);
      } finally {
        await ex.close();
        await client.close();
      }
    });

    it("kills execs when pid 1 exits", async () => {
      const bg = await background("sleep 1");
      const started = Date.now();
      const err = await env.executor.exec(bg.id, { meta: { args: ["sleep", "10"] } }).catch((e: unknown) => e);
      assert.ok(err instanceof ExitError && err.exitCode === 137, String(err));
      assert.ok(Date.now() - started < 9000);
      await bg.done;
    });

    it("execs into a run of another process", async () => {
      const bg = await background();
      try {
        const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
        const script = `
          const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
          const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)}, fifoRoot: ${JSON.stringify(env.fifoRoot)} });
          try { await ex.exec(${JSON.stringify(bg.id)}, { meta: { args: ["sh", "-c", "echo from-$(id -un)"], user: "daemon" }, stdout: process.stdout }); }
          finally { await ex.close(); }`;
        const out = await new Promise<string>((resolve, reject) =>
          execFile(process.execPath, ["--input-type=module", "-e", script], (err, stdout, stderr) =>
            err ? reject(new Error(stderr || String(err))) : resolve(stdout),
          ),
        );
        assert.equal(out, "from-daemon\n");
      } finally {
        bg.ac.abort();
        await bg.done;
      }
    });
  });

  describe("input errors create nothing", () => {
    const rootfsEntries = async () => (await readdir(env.rootfs)).sort();

    it("rejects bad ids, duplicates, unknown network modes, bad users and cwds with typed errors", async () => {
      const before = await rootfsEntries();
      await assert.rejects(sh("true", {}, { id: "a/b" }), (e: unknown) => e instanceof InvalidArgumentError && e.field === "id");
      await assert.rejects(sh("true", {}, { id: "x".repeat(300) }), InvalidArgumentError);
      await assert.rejects(
        sh("true", { network: "nosuchnet" }),
        (e: unknown) => e instanceof InvalidArgumentError && /unknown network mode nosuchnet/.test(e.message),
      );
      await assert.rejects(sh("true", { user: "nosuchuser", cwd: "/created/by/mistake" }), {
        message: "unable to find user nosuchuser: no matching entries in passwd file",
      });
      await assert.rejects(sh("true", { cwd: "relative" }), (e: unknown) => e instanceof InvalidArgumentError && e.field === "cwd");
      await assert.rejects(sh("true", { ulimits: [{ name: "bogus", soft: 1, hard: 1 }] }), InvalidArgumentError);
      await assert.rejects(sh("true", { extraHosts: [{ host: "h", ip: "nope" }] }), /failed to parse IP nope/);
      await assert.rejects(run({ args: [] }), (e: unknown) => e instanceof InvalidArgumentError && e.field === "args");
      await assert.rejects(
        sh("true", {}, { mounts: [{ source: tmpfsMountable(), dest: "relative/dir" }] }),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "mounts",
      );
      assert.deepEqual(await rootfsEntries(), before, "the rootfs changed");
    });

    it("rejects a second run with an id in use", async () => {
      const bg = await background();
      try {
        await assert.rejects(sh("true", {}, { id: bg.id }), AlreadyExistsError);
      } finally {
        bg.ac.abort();
        await bg.done;
      }
    });

    it("names a missing command in a StartError", async () => {
      const err = await run({ args: ["bogus-command"] }).catch((e: unknown) => e);
      assert.ok(err instanceof StartError, String(err));
      assert.equal(err.reason, "not-found");
      assert.match(err.message, /failed to start "bogus-command"/);
      const dir = await run({ args: ["/etc"] }).catch((e: unknown) => e);
      assert.ok(dir instanceof StartError, String(dir));
      assert.equal(dir.reason, "not-executable");
    });
  });

  describe("filesystem", () => {
    it("creates the cwd owned by the user", async () => {
      const out = await output("pwd; id -u", { cwd: "/work/a/b", user: "daemon" });
      assert.equal(out, "/work/a/b\n1\n");
      const st = await stat(join(env.rootfs, "work/a"));
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [1, 1, 0o755]);
    });

    it("mounts binds and tmpfs, and removes the mount stubs after the run", async () => {
      const out = await output(
        "echo hi > /scratch/f && cat /scratch/f && ls /data >/dev/null && grep ' /scratch ' /proc/mounts",
        {},
        {
          mounts: [
            { source: tmpfsMountable({ size: 1 << 20 }), dest: "/scratch" },
            { source: bindMountable(env.stateDir), dest: "/data/state", readonly: true },
          ],
        },
      );
      assert.match(out, /^hi\ntmpfs \/scratch tmpfs \S*size=1024k/);
      assert.equal(existsSync(join(env.rootfs, "scratch")), false, "tmpfs mount stub left");
      assert.equal(existsSync(join(env.rootfs, "data")), false, "bind mount stub parents left");
    });

    it("keeps a mount stub in place while another executor's run on the same root still mounts it", async () => {
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      const other = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot, defaultNetwork: "host" });
      const src = join(env.stateDir, "shared-src");
      await mkdir(src);
      await writeFile(join(src, "marker"), "still here\n");
      try {
        const mounts = [{ source: bindMountable(src), dest: "/shared/in", readonly: true }];
        let started!: () => void;
        const first = new Promise<void>((r) => (started = r));
        const short = env.executor.run({
          root: { source: bindMountable(env.rootfs) },
          mounts,
          process: { meta: { args: ["sleep", "1"] } },
          onStarted: () => started(),
        });
        await first;
        const out = new Collect();
        // Starts while the first run holds the stub; reads its mount after the first run ended.
        const long = other.run({
          root: { source: bindMountable(env.rootfs) },
          mounts,
          process: { meta: { args: ["sh", "-c", "sleep 2; cat /shared/in/marker"] }, stdout: out },
        });
        await short;
        assert.equal(existsSync(join(env.rootfs, "shared/in")), true, "the stub was removed under the other run");
        await long;
        assert.equal(out.text, "still here\n");
        assert.equal(existsSync(join(env.rootfs, "shared")), false, "the last run removes the stubs");
      } finally {
        await other.close();
        await rm(src, { recursive: true, force: true });
      }
    });

    it("mounts a sub-path (selector) of a source, resolved inside it", async () => {
      const src = join(env.stateDir, "selector-src");
      await mkdir(join(src, "sub/dir"), { recursive: true });
      await writeFile(join(src, "sub/dir/f"), "inside\n");
      await writeFile(join(src, "top"), "not visible\n");
      await symlink("../../../../../../etc", join(src, "escape"));
      try {
        assert.equal(
          await output("ls /m; cat /m/f", {}, { mounts: [{ source: bindMountable(src), dest: "/m", selector: "sub/dir" }] }),
          "f\ninside\n",
        );
        // A selector whose symlink points out of the source stays inside it (here: <src>/etc, which is missing).
        await assert.rejects(
          sh("true", {}, { mounts: [{ source: bindMountable(src), dest: "/m", selector: "escape" }] }),
          (e: unknown) => e instanceof InvalidArgumentError && /escape does not exist/.test(e.message),
        );
        await mkdir(join(src, "etc"));
        await writeFile(join(src, "etc/marker"), "src etc\n");
        assert.equal(await output("cat /m/marker", {}, { mounts: [{ source: bindMountable(src), dest: "/m", selector: "escape" }] }), "src etc\n");
      } finally {
        await rm(src, { recursive: true, force: true });
      }
    });

    it("mounts an overlay whose options are too long for the kernel page via the host", async () => {
      const base = join(env.stateDir, "lowers");
      const lowers: string[] = [];
      for (let i = 0; i < 60; i++) {
        const d = join(base, `lower-${String(i).padStart(2, "0")}-${"x".repeat(40)}`);
        await mkdir(d, { recursive: true });
        lowers.push(d);
      }
      await writeFile(join(lowers[59]!, "deep"), "from the last lower\n");
      const overlay = {
        mount: async () => ({ mounts: [{ type: "overlay", source: "overlay", options: [`lowerdir=${lowers.join(":")}`] }], release: async () => {} }),
      };
      try {
        assert.ok(`lowerdir=${lowers.join(":")}`.length >= 3584);
        assert.equal(await output("cat /ov/deep", {}, { mounts: [{ source: overlay, dest: "/ov", readonly: true }] }), "from the last lower\n");
      } finally {
        await rm(base, { recursive: true, force: true });
      }
    });

    it("runs in a cwd that is a mount point", async () => {
      assert.equal(await output("pwd; touch f; ls", { cwd: "/wd" }, { mounts: [{ source: tmpfsMountable(), dest: "/wd" }] }), "/wd\nf\n");
      assert.equal(existsSync(join(env.rootfs, "wd")), false, "the cwd stub under the mount was left");
    });

    it("makes a read-only bind mount read-only, and honours a read-only root", async () => {
      await assert.rejects(sh("touch /data/x", {}, { mounts: [{ source: bindMountable(env.stateDir), dest: "/data", readonly: true }] }), ExitError);
      const stderr = new Collect();
      const err = await sh("touch /ro-test", {}, { root: { source: bindMountable(env.rootfs), readonly: true }, stderr }).catch((e: unknown) => e);
      assert.ok(err instanceof ExitError, String(err));
      assert.match(stderr.text, /Read-only file system/);
    });
  });

  describe("roots", () => {
    it("keeps extra mounts writable under a read-only root", async () => {
      const out = await output(
        "echo ok > /scratch/f && cat /scratch/f",
        { readonlyRootfs: true },
        {
          mounts: [{ source: tmpfsMountable(), dest: "/scratch" }],
        },
      );
      assert.equal(out, "ok\n");
    });

    it("keeps the default root unchanged: each run writes to its own overlay, gone with the run", async () => {
      const { ensureDefaultRootfs } = await import("../../src/rootfs/default-rootfs.js");
      const shared = await ensureDefaultRootfs(env.stateDir);
      const noRoot = (script: string, meta: Partial<ProcessMeta> = {}) => {
        const stdout = new Collect();
        return env.executor.run({ process: { meta: { args: ["sh", "-c", script], ...meta }, stdout } }).then(() => stdout.text);
      };
      const before = (await readdir(shared)).sort();
      assert.equal(
        await noRoot("echo planted > /bin/sh2; rm /bin/ls; echo x > /etc/motd; pwd", { cwd: "/overlay-cwd/deep", user: "1000" }),
        "/overlay-cwd/deep\n",
      );
      assert.deepEqual((await readdir(shared)).sort(), before, "no cwd or other change in the shared tree");
      assert.equal(existsSync(join(shared, "bin/ls")), true);
      assert.equal(existsSync(join(shared, "bin/sh2")), false);
      // The next run sees none of it.
      assert.equal(await noRoot("for p in /bin/ls /bin/sh2 /etc/motd /overlay-cwd; do test -e $p && echo $p; done; echo end"), "/bin/ls\nend\n");
      await env.assertClean();
    });

    it("runs the built-in root from a state dir that takes no overlay upper layer (on overlayfs: a tmpfs takes it)", async () => {
      const { promisify } = await import("node:util");
      const { mountsUnder } = await import("../helpers/env.js");
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      const sh = promisify(execFile);
      // A state dir on overlayfs, as inside a container: overlayfs refuses an upper layer there.
      const base = join(env.stateDir, "on-overlay");
      for (const d of ["l", "u", "w", "m"]) await mkdir(join(base, d), { recursive: true });
      const state = join(base, "m");
      await sh("mount", ["-t", "overlay", "overlay", "-o", `lowerdir=${base}/l,upperdir=${base}/u,workdir=${base}/w`, state]);
      try {
        const said: string[] = [];
        const logger = { debug: (m: string) => said.push(m), info: () => {}, warn: () => {}, error: () => {} };
        const ex = await ContainerdExecutor.create({ namespace: env.namespace, root: state, fifoRoot: env.fifoRoot, defaultNetwork: "host", logger });
        try {
          const stdout = new Collect();
          await ex.run({ process: { meta: { args: ["sh", "-c", "echo kept > /tmp/f && cat /tmp/f"] }, stdout } });
          assert.equal(stdout.text, "kept\n");
          assert.ok(
            said.some((m) => /using a tmpfs/.test(m)),
            "the tmpfs fallback was not taken",
          );
          await ex.settled();
          assert.deepEqual(
            mountsUnder(state).filter((m) => m !== state),
            [],
            "mounts left under the state dir",
          );
          assert.equal(existsSync(join(state, "rootfs/busybox-v2/tmp/f")), false);
        } finally {
          await ex.close();
        }
      } finally {
        await sh("umount", [state]);
        await rm(base, { recursive: true, force: true });
      }
    });

    it("mounts a root that is not a plain writable bind on a private dir, and unmounts it", async () => {
      const roBind = {
        mount: async () => ({ mounts: [{ type: "bind", source: env.rootfs, options: ["rbind", "ro"] }], release: async () => {} }),
      };
      const stderr = new Collect();
      const stdout = new Collect();
      const err = await sh("cat /etc/passwd | head -1; touch /x", {}, { root: { source: roBind }, stdout, stderr }).catch((e: unknown) => e);
      assert.ok(err instanceof ExitError, String(err));
      assert.match(stdout.text, /^root:x:0:0/);
      assert.match(stderr.text, /Read-only file system/);
    });
  });

  describe("cleanup after the process", () => {
    /** Host mounts of `dir` (a bind's root field) or on it, or whose mount point names the run. */
    const mountsOf = async (dir: string, id: string) =>
      parseMountinfo(await readFile("/proc/self/mountinfo", "utf8"))
        .filter((m) => m.root.startsWith(dir) || m.mountPoint.startsWith(dir) || m.mountPoint.includes(id))
        .map((m) => `${m.root} ${m.mountPoint}`);

    it("settles once the process exited and the host is released; the records follow in the background", async () => {
      const id = env.uniqueId("bgdel");
      const mount = join(env.stateDir, "bgdel-src");
      await mkdir(mount, { recursive: true });
      await sh("echo hi > /data/f", {}, { id, mounts: [{ source: bindMountable(mount), dest: "/data" }] });
      // Nothing of the run is mounted on the host when run() settles: the root, its stubs and mounts are the
      // caller's again (a build can commit or reuse them at once).
      assert.deepEqual(await mountsOf(env.rootfs, id), []);
      assert.equal(existsSync(join(env.rootfs, "data")), false, "the mount stub is removed before run() settles");
      assert.equal(await readFile(join(mount, "f"), "utf8"), "hi\n");
      await env.executor.settled();
      assert.deepEqual(
        (await env.client.containers.list()).map((c) => c.id),
        [],
      );
      await rm(mount, { recursive: true });
    });

    it("lets the same id run again right away, and exec into a finished run is NotFound", async () => {
      const id = env.uniqueId("again");
      for (let i = 0; i < 3; i++) assert.equal(await output(`echo ${i}`, {}, { id }), `${i}\n`);
      await assert.rejects(env.executor.exec(id, { meta: { args: ["true"] } }), NotFoundError);
    });

    it("lets another executor reuse the id right away, and still refuses a live container's id", async () => {
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      const other = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot });
      try {
        const id = env.uniqueId("shared");
        for (let i = 0; i < 3; i++) {
          assert.equal(await output(`echo ${i}`, {}, { id }), `${i}\n`);
          const stdout = new Collect();
          await other.run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["echo", `o${i}`] }, stdout } });
          assert.equal(stdout.text, `o${i}\n`);
        }
        const bg = await background();
        try {
          const runDir = join(env.stateDir, "runs", env.namespace, bg.id);
          const owner = await readFile(join(runDir, "owner"), "utf8");
          const fifos = join(env.fifoRoot, env.namespace);
          const fifoDirs = await readdir(fifos);
          await assert.rejects(
            other.run({ id: bg.id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } }),
            AlreadyExistsError,
          );
          // The refused run made nothing and left the live run's state alone (it used to remove its run dir).
          assert.equal(await readFile(join(runDir, "owner"), "utf8"), owner);
          assert.deepEqual(await readdir(fifos), fifoDirs);
          assert.deepEqual(await readdir(join(env.stateDir, "runs", env.namespace)), [bg.id]);
        } finally {
          bg.ac.abort();
          await bg.done;
        }
      } finally {
        await other.close();
      }
    });

    it("with awaitCleanup, settles only after the task and the container are deleted", async () => {
      const events: string[] = [];
      const span = {
        addEvent: (name: string) => {
          events.push(name);
          return span;
        },
        end: () => {},
      } as unknown as Span;
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      await using ex = await ContainerdExecutor.create({
        namespace: env.namespace,
        root: env.stateDir,
        fifoRoot: env.fifoRoot,
        awaitCleanup: true,
        tracer: { startSpan: () => span } as unknown as Tracer,
      });
      await ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } });
      assert.deepEqual(
        (await env.client.containers.list()).map((c) => c.id),
        [],
      );
      assert.deepEqual(events.slice(-2), ["Task deleted", "Container deleted"]);
    });

    it("keeps a run's result when its background deletion fails, and retries it until it succeeds", async () => {
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      const { ContainerdClient } = await import("../../src/containerd/client.js");
      const { UnavailableError } = await import("../../src/errors.js");
      const client = new ContainerdClient({ namespace: env.namespace });
      // Fault injection on the real client: containerd refuses the first task deletion.
      const realDelete = client.tasks.delete;
      let failures = 1;
      client.tasks.delete = (...a) => (failures-- > 0 ? Promise.reject(new UnavailableError("injected")) : realDelete(...a));
      const ex = await ContainerdExecutor.create({ client, root: env.stateDir, fifoRoot: env.fifoRoot });
      try {
        const id = env.uniqueId("retry");
        const r = await ex.run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } });
        assert.equal(r.exitCode, 0);
        await ex.settled();
        // The record stays while the task does, so that prune could still find both.
        assert.deepEqual(
          (await client.containers.list()).map((c) => c.id),
          [id],
        );
        await assert.rejects(ex.exec(id, { meta: { args: ["true"] } }), NotFoundError);
        for (let i = 0; i < 50 && (await client.containers.list()).length > 0; i++) await delay(100);
        assert.deepEqual(
          (await client.containers.list()).map((c) => c.id),
          [],
        );
        assert.deepEqual(
          (await client.tasks.list()).map((t) => t.id),
          [],
        );
      } finally {
        await ex.close();
        await client.close();
      }
    });

    it("leaves nothing when containerd made the record or the task but the call failed (deadline, lost connection)", async () => {
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      const { ContainerdClient } = await import("../../src/containerd/client.js");
      const { DeadlineExceededError, UnavailableError } = await import("../../src/errors.js");
      const client = new ContainerdClient({ namespace: env.namespace });
      // Fault injection on the real client: the creation happens, and then the call fails all the same.
      const realCreate = client.containers.create;
      const realTaskCreate = client.tasks.create;
      let faults = { record: 1, task: 1 };
      client.containers.create = async (...a) => {
        const r = await realCreate(...a);
        if (faults.record-- > 0) throw new DeadlineExceededError("injected: the answer came too late");
        return r;
      };
      client.tasks.create = async (...a) => {
        const r = await realTaskCreate(...a);
        if (faults.task-- > 0) throw new UnavailableError("injected: the connection broke before the answer");
        return r;
      };
      const ex = await ContainerdExecutor.create({ client, root: env.stateDir, fifoRoot: env.fifoRoot, defaultNetwork: "host" });
      const run = () => ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } });
      try {
        await assert.rejects(run(), DeadlineExceededError);
        assert.deepEqual(
          (await client.containers.list()).map((c) => c.id),
          [],
          "the record made despite the deadline is left",
        );
        await assert.rejects(run(), UnavailableError);
        assert.deepEqual(
          (await client.tasks.list()).map((t) => t.id),
          [],
          "the task made despite the error is left",
        );
        assert.deepEqual(
          (await client.containers.list()).map((c) => c.id),
          [],
        );
        assert.equal((await run()).exitCode, 0);
        faults = { record: 0, task: 0 };
      } finally {
        await ex.close();
        await client.close();
      }
      await env.assertClean();
    });

    it("close() waits for the background deletions", async () => {
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      const ex = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot });
      await Promise.all(
        Array.from({ length: 4 }, () => ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } })),
      );
      await ex.close();
      assert.deepEqual(
        (await env.client.containers.list()).map((c) => c.id),
        [],
      );
      assert.deepEqual(
        (await env.client.tasks.list()).map((t) => t.id),
        [],
      );
    });
  });

  describe("mounts on the host", () => {
    it("fails a root whose mount cannot be made with the kernel's reason, leaving no mount or dir", async () => {
      const missing = {
        mount: async () => ({
          mounts: [{ type: "bind", source: join(env.stateDir, "no-such-dir"), options: ["rbind", "ro"] }],
          release: async () => {},
        }),
      };
      const err = await sh("true", {}, { root: { source: missing } }).catch((e: unknown) => e);
      assert.ok(err instanceof Error && /failed to mount .*: ENOENT/.test(err.message), String(err));
      const tmpfsRoot = {
        mount: async () => ({ mounts: [{ type: "tmpfs", source: "tmpfs", options: ["size=1m", "bogus_option=1"] }], release: async () => {} }),
      };
      const err2 = await sh("true", {}, { root: { source: tmpfsRoot } }).catch((e: unknown) => e);
      assert.ok(err2 instanceof Error && /failed to mount .*: EINVAL/.test(err2.message), String(err2));
    });
  });

  describe("resources", () => {
    it("reports an OOM kill", async () => {
      const err = await sh(
        "dd if=/dev/zero of=/dev/null bs=64M count=1",
        { resources: { memory: 16 * 1024 * 1024 } },
        { stderr: new Collect() },
      ).catch((e: unknown) => e);
      assert.ok(err instanceof ExitError, String(err));
      assert.equal(err.exitCode, 137);
      assert.equal(err.oomKilled, true);
    });

    it("reports CPU time and peak memory of the run", async () => {
      const r = await sh("i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done");
      assert.ok((r.usage.cpuNanos ?? 0) > 10_000_000, `cpu ${r.usage.cpuNanos}`);
      assert.ok((r.usage.memoryPeakBytes ?? 0) > 0);
    });
  });

  describe("concurrency and tracing", () => {
    it("runs 20 at once with distinct outputs", async () => {
      const outs = await Promise.all(Array.from({ length: 20 }, (_, i) => output(`echo run-${i}`)));
      assert.deepEqual(
        outs,
        Array.from({ length: 20 }, (_, i) => `run-${i}\n`),
      );
    });

    it("emits span events in order", async () => {
      const events: string[] = [];
      const attrs: Attributes[] = [];
      const span = {
        addEvent: (name: string, a?: Attributes) => {
          events.push(name);
          attrs.push(a ?? {});
          return span;
        },
        end: () => {},
      } as unknown as Span;
      const tracer = { startSpan: () => span } as unknown as Tracer;
      const { ContainerdExecutor } = await import("../../src/executor/executor.js");
      await using ex = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot, tracer });
      await ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } });
      const bk = new Set(["Container created", "Container started", "Container exited", "Container start failed"]);
      assert.deepEqual(
        events.filter((e) => bk.has(e)),
        ["Container created", "Container started", "Container exited"],
      );
      assert.deepEqual(attrs[events.indexOf("Container exited")], { "exit.code": 0 });
      assert.deepEqual(events, [
        "Environment prepared",
        "Spec generated",
        "Container record created",
        "IO created",
        "Container created",
        "Container started",
        "Container exited",
        "Task handed over for deletion",
      ]);
      events.length = 0;
      await ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["bogus"] } } }).catch(() => {});
      assert.deepEqual(
        events.filter((e) => bk.has(e)),
        ["Container start failed"],
      );
    });
  });

  it("a closed executor refuses work and kills what runs", async () => {
    const { ContainerdExecutor } = await import("../../src/executor/executor.js");
    const ex = await ContainerdExecutor.create({ namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot });
    let started!: () => void;
    const s = new Promise<void>((r) => (started = r));
    const p = ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sleep", "30"] } }, onStarted: () => started() });
    await s;
    await ex.close();
    await assert.rejects(p, { exitCode: 137 });
    await assert.rejects(ex.run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } }), CanceledError);
  });
});

/** Issue 17, items 9, 12 and 13: a run's result, input checked before anything exists, typed errors on races. */
describe("run outcome, early validation and typed race errors (real containerd)", () => {
  let env: ExecutorEnv;
  before(async () => {
    env = await createExecutorEnv("sem-exec");
  });
  afterEach(async () => {
    await env.assertClean();
  });
  after(async () => {
    await env.dispose();
  });

  const capture = () => {
    const lines: { level: string; msg: string; error?: unknown }[] = [];
    const at = (level: string) => (msg: string, fields?: Record<string, unknown>) => void lines.push({ level, msg, error: fields?.["error"] });
    return { lines, logger: { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") } };
  };
  /** An executor of its own on `client` (fault injection on a real client), closed by the caller. */
  const executorOn = async (client: ContainerdClient, options: Partial<ExecutorOptions> = {}) =>
    ContainerdExecutor.create({ client, root: env.stateDir, fifoRoot: env.fifoRoot, defaultNetwork: "host", ...options });

  it("keeps a successful run's result when a mount's release fails, and logs the failure with its step", async () => {
    const { lines, logger } = capture();
    const ex = await ContainerdExecutor.create({
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "host",
      logger,
    });
    let released = 0;
    const failing = {
      mount: async () => ({
        mounts: [{ type: "tmpfs", source: "tmpfs", options: ["nosuid"] }],
        release: async () => {
          released++;
          throw new Error("injected: the mount's source is busy");
        },
      }),
    };
    try {
      const r = await ex.run({
        root: { source: bindMountable(env.rootfs) },
        mounts: [{ source: failing, dest: "/scratch" }],
        process: { meta: { args: ["true"] } },
      });
      assert.equal(r.exitCode, 0);
      assert.equal(released, 1);
      const logged = lines.find((l) => l.msg.includes("release mount /scratch"));
      assert.ok(logged && (logged.level === "warn" || logged.level === "error"), JSON.stringify(lines.map((l) => l.msg)));
      assert.match(String((logged.error as Error).message), /injected/);
    } finally {
      await ex.close();
    }
  });

  it("refuses a hostname the kernel would refuse (over 64 bytes) before anything exists", async () => {
    const err = await env.executor
      .run({ root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"], hostname: "h".repeat(65) } } })
      .catch((e: unknown) => e);
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.equal(err.field, "hostname");
    // Nothing was made for it: no record, task, shim, FIFO, mount or run dir (afterEach checks them all).
    await env.assertClean();
  });

  it("works with a state dir given through a symlink and leaves nothing mounted (mountinfo shows real paths)", async () => {
    const link = join(tmpdir(), `ctrexec-test-sem-link-${process.pid}`);
    await symlink(env.stateDir, link);
    const ex = await ContainerdExecutor.create({ namespace: env.namespace, root: link, fifoRoot: env.fifoRoot, defaultNetwork: "host" });
    try {
      assert.equal(ex.root, env.stateDir);
      const stdout = new Collect();
      // No root: the built-in rootfs through an overlay in the run dir, which runc refuses behind a symlink.
      await ex.run({ process: { meta: { args: ["sh", "-c", "echo ok"] }, stdout } });
      assert.equal(stdout.text, "ok\n");
    } finally {
      await ex.close();
      await rm(link);
    }
    await env.assertClean();
  });

  it("refuses a mount selector with a NUL byte before anything exists (C would read a shorter path)", async () => {
    const err = await env.executor
      .run({
        root: { source: bindMountable(env.rootfs) },
        mounts: [{ source: bindMountable(env.rootfs), dest: "/mnt", selector: "/etc\0/../bin" }],
        process: { meta: { args: ["true"] } },
      })
      .catch((e: unknown) => e);
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.equal(err.field, "mounts");
    await env.assertClean();
  });

  it("gives an exec racing its run's exit ContainerExitedError", async () => {
    const client = new ContainerdClient({ namespace: env.namespace });
    // Test hook on the real client: the run's process is killed, and its exit seen, right before the Exec call
    // (the race: the run was running when exec looked, and is gone when containerd gets the call).
    const realExec = client.tasks.exec;
    client.tasks.exec = async (...a) => {
      const ref = { containerId: a[0].containerId };
      const exited = client.tasks.wait(ref);
      await client.tasks.kill({ ...ref, signal: 9, all: true });
      await exited;
      return realExec(...a);
    };
    const ex = await executorOn(client);
    try {
      const id = env.uniqueId("race");
      let started!: () => void;
      const running = new Promise<void>((r) => (started = r));
      const done = ex
        .run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["sleep", "30"] } }, onStarted: () => started() })
        .catch((e: unknown) => e);
      await running;
      const err = await ex.exec(id, { meta: { args: ["true"] } }).catch((e: unknown) => e);
      assert.ok(err instanceof ContainerExitedError, `${String(err)} (${(err as Error)?.constructor?.name})`);
      const runErr = await done;
      assert.ok(runErr instanceof ExitError && runErr.exitCode === 137, String(runErr));
    } finally {
      await ex.close();
      await client.close();
    }
  });

  it("gives CanceledError to a run aborted while it waits for an earlier run's records with its id", async () => {
    // Executor A: containerd refuses its run's task deletion (as if away) until the test lets it go, so the
    // finished run's records stay, retried in the background.
    const clientA = new ContainerdClient({ namespace: env.namespace });
    const realDelete = clientA.tasks.delete;
    let refuse = true;
    clientA.tasks.delete = (...a) => (refuse ? Promise.reject(new UnavailableError("injected")) : realDelete(...a));
    const a = await executorOn(clientA);
    // Executor B: a run with the same id waits for them to go; a test hook aborts it in the middle of that wait.
    const clientB = new ContainerdClient({ namespace: env.namespace });
    const id = env.uniqueId("same");
    const ac = new AbortController();
    const realGet = clientB.tasks.get;
    clientB.tasks.get = async (...g) => {
      const r = await realGet(...g);
      if (g[0].containerId === id) ac.abort(new Error("the caller gave up"));
      return r;
    };
    const b = await executorOn(clientB);
    try {
      assert.equal((await a.run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } } })).exitCode, 0);
      const err = await b
        .run({ id, root: { source: bindMountable(env.rootfs) }, process: { meta: { args: ["true"] } }, signal: ac.signal })
        .catch((e: unknown) => e);
      assert.ok(ac.signal.aborted, "the run never waited for the earlier records");
      assert.ok(err instanceof CanceledError, `${String(err)} (${(err as Error)?.constructor?.name})`);
      assert.equal((err.cause as Error).message, "the caller gave up");
    } finally {
      refuse = false;
      await b.close();
      await a.close();
      await Promise.all([clientA.close(), clientB.close()]);
    }
  });

  it("lets the caller's signal end a run's wait for a kept founder with its id (the founder waits for its borrower)", async () => {
    const ex = await ContainerdExecutor.create({
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "host",
      shimIdleMs: 60_000,
    });
    const root = { source: bindMountable(env.rootfs) };
    const stopBorrower = new AbortController();
    try {
      // A run with a generated id founds a shim group and keeps its stopped task; the next run borrows its shim.
      const founder = await ex.run({ root, process: { meta: { args: ["true"] } } });
      let started!: () => void;
      const running = new Promise<void>((r) => (started = r));
      const borrower = ex
        .run({ root, process: { meta: { args: ["sleep", "20"] } }, signal: stopBorrower.signal, onStarted: () => started() })
        .catch((e: unknown) => e);
      await running;
      // The founder's id again: its records go only after the borrower, which the caller need not wait for.
      const ac = new AbortController();
      const again = ex.run({ id: founder.id, root, process: { meta: { args: ["true"] } }, signal: ac.signal }).catch((e: unknown) => e);
      ac.abort(new Error("the caller gave up"));
      const first = await Promise.race([again.then((e) => ({ who: "again", e })), borrower.then((e) => ({ who: "borrower", e }))]);
      assert.equal(first.who, "again", "the canceled run waited for the founder's borrower");
      assert.ok(first.e instanceof CanceledError, String(first.e));
      stopBorrower.abort(new Error("done"));
      const b = await borrower;
      assert.ok(b instanceof ExitError && b.exitCode === 137, String(b));
    } finally {
      stopBorrower.abort(new Error("done"));
      await ex.close();
    }
  });
});
