import assert from "node:assert/strict";
import { existsSync, constants as fsc, openSync } from "node:fs";
import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable, Writable } from "node:stream";
import { after, before, describe, it } from "node:test";
import { ProcessIO } from "../../src/containerd/io.js";
import { Collect } from "../helpers/streams.js";

/** Plays the shim's part: opens the other ends of the FIFOs the way it does once the task exists. */
function shimWriter(path: string): net.Socket {
  return new net.Socket({ fd: openSync(path, fsc.O_WRONLY | fsc.O_NONBLOCK), readable: false, writable: true });
}
function shimReader(path: string): net.Socket {
  return new net.Socket({ fd: openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK), readable: true, writable: false });
}
function writeAll(s: net.Socket, data: Buffer | string): Promise<void> {
  return new Promise((resolve, reject) => s.end(data, () => resolve()).once("error", reject));
}
const settled = (p: Promise<unknown>, ms: number) => Promise.race([p.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);

describe("ProcessIO (FIFOs, no containerd)", () => {
  let fifoRoot: string;
  before(async () => {
    fifoRoot = await mkdtemp(join(tmpdir(), "ctrexec-io-"));
  });
  after(() => rm(fifoRoot, { recursive: true, force: true }));

  it("needs no FIFOs when the process has no streams", async () => {
    const io = await ProcessIO.create({ fifoRoot, id: "none" });
    assert.deepEqual(io.config, { stdin: "", stdout: "", stderr: "", terminal: false });
    assert.equal(io.dir, "");
    await io.wait();
    await io.close();
  });

  it("makes a private FIFO dir with stdout and stderr both, even when only one is wanted", async () => {
    const io = await ProcessIO.create({ fifoRoot, id: "both", stdout: new Collect() });
    try {
      assert.equal(((await stat(io.dir)).mode & 0o777).toString(8), "700");
      assert.ok((await stat(io.config.stdout)).isFIFO());
      assert.ok((await stat(io.config.stderr)).isFIFO());
      assert.equal(io.config.stdin, "");
    } finally {
      await io.close();
    }
    assert.equal(existsSync(io.dir), false, "close() must remove the FIFO dir");
  });

  it("uses stdin and stdout only for a terminal", async () => {
    const io = await ProcessIO.create({ fifoRoot, id: "tty", terminal: true, stdin: Readable.from([]) });
    try {
      assert.equal(io.config.terminal, true);
      assert.equal(io.config.stderr, "");
      assert.notEqual(io.config.stdin, "");
      assert.notEqual(io.config.stdout, "");
    } finally {
      await io.close();
    }
  });

  it("copies output and resolves wait() only after EOF", async () => {
    const stdout = new Collect();
    const stderr = new Collect();
    const io = await ProcessIO.create({ fifoRoot, id: "out", stdout, stderr });
    const out = shimWriter(io.config.stdout);
    const err = shimWriter(io.config.stderr);
    out.write("hello ");
    assert.equal(await settled(io.wait(), 100), false, "wait() resolved before EOF");
    await writeAll(out, "world\n");
    await writeAll(err, "oops\n");
    await io.wait();
    assert.equal(stdout.text, "hello world\n");
    assert.equal(stderr.text, "oops\n");
    await io.close();
  });

  it("drains a stream nobody asked for, so the writer never blocks", async () => {
    const io = await ProcessIO.create({ fifoRoot, id: "drain", stdout: new Collect() });
    const err = shimWriter(io.config.stderr);
    await writeAll(err, Buffer.alloc(1024 * 1024, 1)); // 16x the pipe buffer
    await writeAll(shimWriter(io.config.stdout), "");
    await io.wait();
    await io.close();
  });

  it("follows a slow destination's backpressure and loses nothing", async () => {
    const received: Buffer[] = [];
    const slow = new Writable({
      highWaterMark: 1,
      write(chunk: Buffer, _e, cb) {
        received.push(chunk);
        setTimeout(cb, 1);
      },
    });
    const io = await ProcessIO.create({ fifoRoot, id: "slow", stdout: slow, stderr: new Collect() });
    const data = Buffer.alloc(512 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    await Promise.all([writeAll(shimWriter(io.config.stdout), data), writeAll(shimWriter(io.config.stderr), "")]);
    await io.wait();
    assert.ok(Buffer.concat(received).equals(data));
    await io.close();
  });

  it("keeps following backpressure while it paces bulk output", async () => {
    // Output in small pieces from another process, read paced once it flows (io.ts, OutputCopy); then the
    // destination stops taking anything for 300 ms. A pause that ends must not read on into a full destination.
    let bytes = 0;
    let queuedWhileStuck = 0;
    let stuck = false;
    const sink = new Writable({
      highWaterMark: 16 * 1024,
      write(chunk: Buffer, _e, cb) {
        bytes += chunk.length;
        if (bytes < 6 * 1024 * 1024 || stuck) return cb();
        stuck = true;
        setTimeout(() => {
          queuedWhileStuck = sink.writableLength - chunk.length;
          cb();
        }, 300);
      },
    });
    const io = await ProcessIO.create({ fifoRoot, id: "paced", stdout: sink, stderr: new Collect() });
    const total = 12 * 1024 * 1024;
    // ~20 MB/s in 4 KiB writes: slow enough that each read finds little, so reads are paced.
    const writer = `
      const fs = require("node:fs");
      const fd = fs.openSync(${JSON.stringify(io.config.stdout)}, "w");
      const piece = Buffer.alloc(4096, 7);
      let sent = 0;
      const tick = () => {
        for (let i = 0; i < 5 && sent < ${total}; i++, sent += piece.length) fs.writeSync(fd, piece);
        if (sent < ${total}) setTimeout(tick, 1); else fs.closeSync(fd);
      };
      tick();`;
    const { execFile } = await import("node:child_process");
    await Promise.all([
      new Promise<void>((resolve, reject) => execFile(process.execPath, ["-e", writer], (err) => (err ? reject(err) : resolve()))),
      writeAll(shimWriter(io.config.stderr), ""),
    ]);
    await io.wait();
    assert.equal(bytes, total);
    assert.ok(stuck);
    assert.ok(queuedWhileStuck <= 256 * 1024, `${queuedWhileStuck} bytes read into a destination that asked us to wait`);
    await io.close();
  });

  it("keeps draining when the destination fails", async () => {
    const broken = new Writable({
      write(_c, _e, cb) {
        cb(new Error("EPIPE"));
      },
    });
    broken.on("error", () => {});
    const io = await ProcessIO.create({ fifoRoot, id: "broken", stdout: broken, stderr: new Collect() });
    await Promise.all([writeAll(shimWriter(io.config.stdout), Buffer.alloc(256 * 1024)), writeAll(shimWriter(io.config.stderr), "")]);
    await io.wait();
    await io.close();
  });

  it("cancel() unblocks wait() when the writer never closes", async () => {
    const io = await ProcessIO.create({ fifoRoot, id: "cancel", stdout: new Collect(), stderr: new Collect() });
    const out = shimWriter(io.config.stdout);
    out.write("partial");
    assert.equal(await settled(io.wait(), 50), false);
    io.cancel();
    assert.equal(await settled(io.wait(), 1000), true, "wait() still blocked after cancel()");
    await io.close();
    await io.close();
    out.destroy();
  });

  it("never parks the libuv threadpool on FIFOs nobody writes to", async () => {
    const ios = await Promise.all(
      Array.from({ length: 8 }, (_, i) => ProcessIO.create({ fifoRoot, id: `idle${i}`, stdout: new Collect(), stdin: Readable.from(["x"]) })),
    );
    try {
      // With 4 threadpool threads, 8 blocking opens would starve this read forever.
      assert.equal(await settled(readFile("/proc/self/status"), 2000), true, "fs calls are starved");
    } finally {
      await Promise.all(ios.map((io) => io.close()));
    }
  });

  it("writes all of stdin, then calls CloseIO once, only after it was armed", async () => {
    const chunks = [Buffer.alloc(100_000, 7), Buffer.from("tail")];
    const io = await ProcessIO.create({ fifoRoot, id: "stdin", stdin: Readable.from(chunks), stdout: new Collect() });
    const reader = shimReader(io.config.stdin);
    const got: Buffer[] = [];
    reader.on("data", (c: Buffer) => got.push(c));
    let closes = 0;
    let bytesAtClose = -1;
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(closes, 0);
    io.closeStdinWhenDone(async () => {
      closes++;
      await new Promise((r) => setTimeout(r, 20)); // the reader drains what is still in the pipe
      bytesAtClose = Buffer.concat(got).length;
    });
    for (let i = 0; i < 50 && bytesAtClose < 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(closes, 1);
    assert.equal(bytesAtClose, 100_004);
    assert.ok(Buffer.concat(got).equals(Buffer.concat(chunks)));
    reader.destroy();
    await writeAll(shimWriter(io.config.stdout), "");
    await writeAll(shimWriter(io.config.stderr), "");
    await io.close();
  });

  it("does not call CloseIO while the caller's stdin is still open", async () => {
    const stdin = new Readable({ read() {} });
    stdin.push("a");
    const io = await ProcessIO.create({ fifoRoot, id: "open", stdin, stdout: new Collect() });
    let closes = 0;
    io.closeStdinWhenDone(async () => {
      closes++;
    });
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(closes, 0);
    stdin.push(null);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(closes, 1);
    await io.close();
  });
});
