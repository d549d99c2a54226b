import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { describe, it } from "node:test";
import { ExitError, StartError } from "../../src/errors.js";
import type { ProcessMeta } from "../../src/executor/types.js";
import { Channel } from "../../src/util/channel.js";
import { Collect } from "../helpers/streams.js";
import { boundRoot, defaultRootlessStateDir, ROOTLESS_FIFO_ROOT, type RootlessEnv, withEnv } from "./env.js";

/** The host uid this process runs as in rootlesskit's user namespace (uid 0 inside), from its uid_map. */
function hostUid(): number {
  const line = readFileSync("/proc/self/uid_map", "utf8")
    .split("\n")
    .map((l) => l.trim().split(/\s+/).map(Number))
    .find((f) => f[0] === 0);
  assert.ok(line, "no mapping for uid 0 in our user namespace");
  return line[1]!;
}

/**
 * Starts `sleep` in the background, resolves once it runs. `stop` ends it with a SIGKILL of its own (not through
 * cancellation, which the cancel test covers), and resolves with how it ended.
 */
async function background(env: RootlessEnv, meta: Partial<ProcessMeta> = {}, stdout?: Collect) {
  const id = env.uniqueId("bg");
  const signals = new Channel<NodeJS.Signals | number>();
  let started!: () => void;
  const running = new Promise<void>((r) => (started = r));
  const done = env.sh("sleep 60", meta, { id, signals, onStarted: () => started(), ...(stdout ? { stdout } : {}) }).catch((e: unknown) => e);
  const first = await Promise.race([running.then(() => undefined), done]);
  assert.equal(first, undefined, `the background run ended before it started: ${String(first)}`);
  const stop = async () => {
    signals.push("SIGKILL");
    const end = await done;
    signals.close();
    return end;
  };
  return { id, stop };
}

describe("rootless: runs and execs (inside rootlesskit's namespaces)", () => {
  it("finds the rootless daemon by itself and runs the built-in root in its user namespace", () =>
    withEnv("detect", async (env) => {
      const out = await env.output("id -u; cat /proc/self/uid_map");
      const [uid, ...map] = out.trim().split("\n");
      assert.equal(uid, "0");
      // The container shares rootlesskit's user namespace: the same map as ours, the user's uid first.
      assert.equal(Number(map[0]?.trim().split(/\s+/)[1]), hostUid(), `uid_map: ${map.join(" | ")}`);
      assert.equal(map.length, 2, `uid_map: ${map.join(" | ")}`);
    }));

  it("uses the user's rootless state dir and FIFO root (in its runtime dir) when given none", () =>
    withEnv(
      "defaults",
      async (env) => {
        const bg = await background(env, {}, new Collect());
        try {
          assert.equal(env.stateDir, defaultRootlessStateDir());
          assert.deepEqual(await readdir(join(env.stateDir, "runs", env.namespace)), [bg.id]);
          const fifos = (await readdir(join(ROOTLESS_FIFO_ROOT, env.namespace))).filter((f) => f.startsWith(`${bg.id}-`));
          assert.equal(fifos.length, 1, `FIFO dirs of ${bg.id}: ${fifos.join(", ")}`);
        } finally {
          const end = await bg.stop();
          assert.ok(end instanceof ExitError && end.exitCode === 137, String(end));
        }
      },
      {},
      true,
    ));

  it("resolves with 0, rejects with 3 and with 137 after SIGKILL", () =>
    withEnv("exit", async (env) => {
      assert.equal((await env.sh("true")).exitCode, 0);
      const three = await env.sh("exit 3").catch((e: unknown) => e);
      assert.ok(three instanceof ExitError && three.exitCode === 3, String(three));
      const signals = new Channel<NodeJS.Signals | number>();
      const killed = await env.sh("sleep 60", {}, { signals, onStarted: () => signals.push("SIGKILL") }).catch((e: unknown) => e);
      signals.close();
      assert.ok(killed instanceof ExitError && killed.exitCode === 137 && killed.signal === 9, String(killed));
    }));

  it("execs into a running container, with its own user, cwd and stdin", () =>
    withEnv("exec", async (env) => {
      const bg = await background(env, { env: ["FROM_RUN=1"] });
      try {
        const ex = async (meta: Partial<ProcessMeta> & { args: string[] }, stdin?: Readable) => {
          const stdout = new Collect();
          await env.executor.exec(bg.id, { meta, stdout, stderr: new Collect(), stdin: stdin ?? null });
          return stdout.text.trim();
        };
        assert.equal(await ex({ args: ["sh", "-c", "echo $FROM_RUN"] }), "1");
        assert.equal(await ex({ args: ["id"], user: "daemon" }), "uid=1(daemon) gid=1(daemon) groups=1(daemon)");
        assert.equal(await ex({ args: ["pwd"], cwd: "/tmp" }), "/tmp");
        assert.equal(await ex({ args: ["cat"] }, Readable.from(["through an exec"])), "through an exec");
        assert.match(await ex({ args: ["ps", "-o", "pid,comm"] }), /^\s*1 sleep$/m);
        const err = await env.executor.exec(bg.id, { meta: { args: ["sh", "-c", "exit 5"] } }).catch((e: unknown) => e);
        assert.ok(err instanceof ExitError && err.exitCode === 5, String(err));
      } finally {
        const end = await bg.stop();
        assert.ok(end instanceof ExitError && end.exitCode === 137, String(end));
      }
    }));

  it("forwards a signal to the process, and gives an exec a TTY", () =>
    withEnv("signal", async (env) => {
      // The trap is set before "ready" is written: the signal goes only after the process said so.
      const signals = new Channel<NodeJS.Signals | number>();
      let sawReady!: () => void;
      const ready = new Promise<void>((r) => (sawReady = r));
      const stdout = new Writable({
        write(chunk: Buffer, _enc, cb) {
          if (chunk.toString().includes("ready")) sawReady();
          cb();
        },
      });
      const done = env.sh('trap "exit 42" HUP; echo ready; while true; do sleep 0.1; done', {}, { signals, stdout }).catch((e: unknown) => e);
      const first = await Promise.race([ready.then(() => undefined), done]);
      assert.equal(first, undefined, `the run ended before it was ready: ${String(first)}`);
      signals.push("SIGHUP");
      const err = await done;
      signals.close();
      assert.ok(err instanceof ExitError && err.exitCode === 42, String(err));

      const bg = await background(env);
      try {
        const stdout = new Collect();
        await env.executor.exec(bg.id, { meta: { args: ["sh", "-c", "tty; stty size"], tty: true, consoleSize: { rows: 33, cols: 77 } }, stdout });
        assert.match(stdout.text, /^\/dev\/pts\/\d+\r\n33 77\r\n$/);
      } finally {
        const end = await bg.stop();
        assert.ok(end instanceof ExitError && end.exitCode === 137, String(end));
      }
    }));

  it("names a missing or non-executable command in a StartError, leaving nothing", () =>
    withEnv("start-error", async (env) => {
      const missing = await env.executor.run({ process: { meta: { args: ["bogus-command"] } } }).catch((e: unknown) => e);
      assert.ok(missing instanceof StartError && missing.reason === "not-found", String(missing));
      const dir = await env.executor.run({ process: { meta: { args: ["/etc"] } } }).catch((e: unknown) => e);
      assert.ok(dir instanceof StartError && dir.reason === "not-executable", String(dir));
    }));

  it("looks a named user up in the root's /etc/passwd", () =>
    withEnv("user", async (env) => {
      assert.equal(await env.output("id", { user: "user" }), "uid=1000(user) gid=1000(user) groups=1000(user)\n");
      assert.equal(await env.output("id -u; id -g", { user: "daemon:tty" }), "1\n5\n");
      assert.equal(await env.output("id -u; id -g", { user: "1000:1000" }), "1000\n1000\n");
    }));

  it("creates a missing cwd owned by the run's user", () =>
    withEnv("cwd", async (env) => {
      const root = await boundRoot(env);
      assert.equal(await env.output("pwd; id -u; stat -c %u:%g .", { cwd: "/work/a/b", user: "user" }, root), "/work/a/b\n1000\n1000:1000\n");
      // On disk (as this user namespace sees it): the container's 1000 is a subordinate id of the user's.
      const st = await stat(join(await env.rootfs(), "work/a"));
      assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [1000, 1000, 0o755]);
      // And on the built-in root's own overlay, too.
      assert.equal(await env.output("pwd; stat -c %u:%g .", { cwd: "/new/dir", user: "daemon" }), "/new/dir\n1:1\n");
    }));

  it("keeps stdout and stderr apart and feeds stdin", () =>
    withEnv("stdio", async (env) => {
      const stdout = new Collect();
      const stderr = new Collect();
      await env.sh("cat; echo err >&2; echo out", {}, { stdin: Readable.from(["from stdin\n"]), stdout, stderr });
      assert.equal(stdout.text, "from stdin\nout\n");
      assert.equal(stderr.text, "err\n");
    }));

  it("gives a TTY: tty names a /dev/pts device, stty sees the size", () =>
    withEnv("tty", async (env) => {
      const stdout = new Collect();
      await env.executor.run({
        process: {
          meta: { args: ["sh", "-c", "tty; stty size"], tty: true, consoleSize: { rows: 30, cols: 90 } },
          stdin: null,
          stdout,
          stderr: null,
        },
      });
      assert.match(stdout.text, /^\/dev\/pts\/\d+\r\n30 90\r\n$/);
    }));

  it("cancels a running process through its AbortSignal; the container is gone afterwards", () =>
    withEnv("cancel", async (env) => {
      const ac = new AbortController();
      const reason = new Error("test canceled");
      const id = env.uniqueId("cancel");
      const err = await env.sh("sleep 60", {}, { id, signal: ac.signal, onStarted: () => ac.abort(reason) }).catch((e: unknown) => e);
      assert.ok(err instanceof ExitError && err.exitCode === 137, String(err));
      assert.equal(err.cause, reason);
      await env.executor.settled();
      assert.deepEqual(
        (await env.client.containers.list()).map((c) => c.id),
        [],
      );
    }));

  it("runs the built-in root: busybox, its users, a writable overlay per run", () =>
    withEnv("rootfs", async (env) => {
      const out = await env.output(
        "ls /bin/busybox; grep -c . /etc/passwd; echo x > /marker && cat /marker; grep ' / ' /proc/mounts | cut -d' ' -f3",
      );
      assert.equal(out, "/bin/busybox\n4\nx\noverlay\n");
      assert.equal(await env.output("test -e /marker && echo leaked || echo fresh"), "fresh\n");
    }));
});
