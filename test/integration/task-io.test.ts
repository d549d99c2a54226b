import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, it } from "node:test";
import type { ProcessStreams } from "../../src/containerd/io.js";
import { CanceledError } from "../../src/errors.js";
import { defaultSpec } from "../../src/oci/defaults.js";
import { createTestEnv, type TestEnv } from "../helpers/env.js";
import { runTask } from "../helpers/run-task.js";
import { Collect, HashSink, repeatedDigest } from "../helpers/streams.js";

describe("a task run with the client and the IO layer", () => {
  let env: TestEnv;
  before(async () => {
    env = await createTestEnv("taskio");
  });
  after(async () => {
    await env.assertNoLeaks();
    await env.dispose();
  });

  async function run(args: string[], streams: ProcessStreams, signal?: AbortSignal, onStarted?: () => void) {
    const id = env.uniqueId();
    const spec = defaultSpec(env.namespace, id);
    spec.process!.args = args;
    spec.process!.terminal = streams.terminal ?? false;
    spec.mounts = spec.mounts!.filter((m) => m.destination !== "/run");
    const result = await runTask(env.client, {
      id,
      spec,
      rootfs: [{ type: "bind", source: env.rootfs, options: ["rbind", "ro"] }],
      fifoRoot: env.fifoRoot,
      streams,
      signal,
      ...(onStarted ? { onStarted } : {}),
    });
    return result.exitStatus;
  }

  it("separates stdout and stderr and reports the exit status", async () => {
    const stdout = new Collect();
    const stderr = new Collect();
    const code = await run(["sh", "-c", "echo out; echo err >&2; exit 3"], { stdout, stderr });
    assert.equal(code, 3);
    assert.equal(stdout.text, "out\n");
    assert.equal(stderr.text, "err\n");
    await env.assertNoLeaks();
  });

  it("copies 1 MiB of stdin through cat byte-exact, then delivers EOF", async () => {
    const input = randomBytes(1024 * 1024);
    const stdout = new Collect();
    const code = await run(["cat"], { stdin: Readable.from([input.subarray(0, 1000), input.subarray(1000)]), stdout });
    assert.equal(code, 0);
    assert.equal(stdout.buffer.length, input.length);
    assert.ok(stdout.buffer.equals(input), "stdin came back changed");
  });

  it("gives a stdin that has already ended as an immediate EOF", async () => {
    const stdout = new Collect();
    const code = await run(["cat"], { stdin: Readable.from([]), stdout });
    assert.equal(code, 0);
    assert.equal(stdout.text, "");
  });

  it("runs with no streams at all (the shim's /dev/null)", async () => {
    assert.equal(await run(["sh", "-c", "echo ignored; exit 5"], {}), 5);
  });

  it("drains stdout and stderr that nobody asked for, so the process never blocks", async () => {
    const stdout = new Collect();
    // 1 MiB on stderr would fill the pipe and block the process if stderr were left unread.
    const code = await run(["sh", "-c", "head -c 1048576 /dev/zero >&2; echo done"], { stdout });
    assert.equal(code, 0);
    assert.equal(stdout.text, "done\n");
  });

  it("allocates a TTY: tty prints a /dev/pts path", async () => {
    const stdout = new Collect();
    const code = await run(["tty"], { terminal: true, stdout });
    assert.equal(code, 0);
    assert.match(stdout.text, /^\/dev\/pts\/\d+\r\n$/);
  });

  it("delivers 64 MiB of stdout byte-exact before reporting the exit", async () => {
    const size = 64 * 1024 * 1024;
    const sink = new HashSink();
    const code = await run(["sh", "-c", `yes 0123456789abcdef | head -c ${size}`], { stdout: sink, stderr: new Collect() });
    assert.equal(code, 0);
    assert.equal(sink.bytes, size);
    assert.equal(sink.digest(), repeatedDigest("0123456789abcdef\n", size));
    // head writes 4 KiB at a time; read as it comes that is ~8 KiB per read (~8000 reads). Paced reading
    // (io.ts, OutputCopy) takes what piled up in the FIFO instead.
    assert.ok(sink.writes < size / (24 * 1024), `${sink.writes} reads for ${size} bytes: bulk output is read in small pieces`);
  });

  it("kills a canceled run and cleans up everything", async () => {
    const ac = new AbortController();
    const started = Date.now();
    const err = await run(["sleep", "60"], {}, ac.signal, () => setTimeout(() => ac.abort(new Error("stop")), 100)).catch((e: unknown) => e);
    assert.ok(err instanceof CanceledError, String(err));
    assert.equal((err.cause as Error).message, "stop");
    assert.ok(Date.now() - started < 5000, "cancel took too long");
    await env.assertNoLeaks();
  });

  it("leaves nothing when the task cannot be created", async () => {
    const err = await run(["/bin/does-not-exist"], { stdout: new Collect(), stderr: new Collect() }).catch((e: unknown) => e);
    assert.ok(err instanceof Error);
    assert.match(err.message, /does-not-exist/);
    await env.assertNoLeaks();
  });
});
