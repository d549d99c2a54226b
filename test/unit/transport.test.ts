/**
 * The gRPC transport against a scripted HTTP/2 server on a unix socket: the protocol cases containerd rarely
 * produces on demand (trailers-only errors, resets, HTTP errors, a dropped connection, GOAWAY, split frames).
 * Everything ordinary is covered against the real containerd in integration/client.test.ts.
 */
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import http2 from "node:http2";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { ContainerdClient } from "../../src/containerd/client.js";
import { FrameDecoder, frame } from "../../src/containerd/grpc-wire.js";
import { GrpcTransport } from "../../src/containerd/transport.js";
import {
  CanceledError,
  DataLossError,
  DeadlineExceededError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnknownError,
} from "../../src/errors.js";
import { Content, WriteAction, WriteContentRequestSchema, WriteContentResponseSchema } from "../../src/gen/content_pb.js";
import { EnvelopeSchema } from "../../src/gen/events_pb.js";
import { VersionResponseSchema } from "../../src/gen/version_pb.js";
import { decode, encode } from "../helpers/proto.js";

type Handler = (stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders) => void;

const versionResponse = { encode: (v: { version: string; revision: string }) => encode(VersionResponseSchema, v) };
const envelope = { encode: (v: { namespace: string; topic: string }) => encode(EnvelopeSchema, v) };
const GRPC = { ":status": 200, "content-type": "application/grpc" };

function answer(stream: http2.ServerHttp2Stream, body: Buffer, status = 0, message = ""): void {
  stream.respond(GRPC, { waitForTrailers: true });
  stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": String(status), ...(message ? { "grpc-message": message } : {}) }));
  stream.end(body);
}

describe("gRPC transport (scripted server)", () => {
  let dir: string;
  let sock: string;
  let server: http2.Http2Server;
  let handler: Handler = () => {};
  /** When set, streams go to it as they open, before their requests end (client and bidi streaming). */
  let live: Handler | undefined;
  const sessions = new Set<http2.ServerHttp2Session>();
  let client: ContainerdClient;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ctrexec-transport-"));
    sock = join(dir, "grpc.sock");
    server = http2.createServer();
    server.on("session", (s) => {
      sessions.add(s);
      s.on("close", () => sessions.delete(s));
    });
    server.on("stream", (stream, headers) => {
      if (live) return live(stream, headers);
      // Requests arrive whole before the handler acts, as a unary server would see them.
      const parts: Buffer[] = [];
      stream.on("data", (d: Buffer) => parts.push(d));
      stream.on("end", () => handler(stream, headers));
      stream.on("error", () => {});
    });
    await new Promise<void>((resolve) => server.listen(sock, resolve));
    client = new ContainerdClient({ address: `unix://${sock}`, namespace: "ns-a" });
  });

  after(async () => {
    await client.close();
    for (const s of sessions) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  it("sends gRPC's headers with the namespace and deadline, and decodes the answer", async () => {
    let seen: http2.IncomingHttpHeaders = {};
    handler = (stream, headers) => {
      seen = headers;
      answer(stream, frame(versionResponse.encode({ version: "9.9", revision: "r" })));
    };
    assert.deepEqual(await client.version(), { version: "9.9", revision: "r" });
    assert.equal(seen[":path"], "/containerd.services.version.v1.Version/Version");
    assert.equal(seen["content-type"], "application/grpc");
    assert.equal(seen["te"], "trailers");
    assert.equal(seen["containerd-namespace"], "ns-a");
    assert.equal(seen["grpc-timeout"], "5000m");
  });

  it("reassembles a message split over many DATA frames", async () => {
    const long = "v".repeat(200_000);
    handler = (stream) => {
      const body = frame(versionResponse.encode({ version: long, revision: "" }));
      stream.respond(GRPC, { waitForTrailers: true });
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      for (let i = 0; i < body.length; i += 1000) stream.write(body.subarray(i, i + 1000));
      stream.end();
    };
    assert.equal((await client.version()).version, long);
  });

  it("reads a trailers-only error with its percent-encoded message", async () => {
    handler = (stream) => stream.respond({ ...GRPC, "grpc-status": "5", "grpc-message": "no%20such thing%3A x" }, { endStream: true });
    const err = await client.version().catch((e: unknown) => e);
    assert.ok(err instanceof NotFoundError, String(err));
    assert.equal(err.message, "no such thing: x");
  });

  it("maps an HTTP error without a gRPC status", async () => {
    handler = (stream) => stream.respond({ ":status": 503 }, { endStream: true });
    await assert.rejects(client.version(), UnavailableError);
  });

  it("maps stream resets: REFUSED_STREAM is UNAVAILABLE, INTERNAL_ERROR is UNKNOWN", async () => {
    handler = (stream) => stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
    await assert.rejects(client.version(), UnavailableError);
    handler = (stream) => stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
    await assert.rejects(client.version(), UnknownError);
  });

  it("fails an OK status without a message, and a response cut inside a message", async () => {
    handler = (stream) => answer(stream, Buffer.alloc(0));
    await assert.rejects(client.version(), (e: unknown) => e instanceof UnknownError && /no response message/.test(e.message));
    handler = (stream) => answer(stream, frame(versionResponse.encode({ version: "x", revision: "y" })).subarray(0, 7));
    await assert.rejects(client.version(), (e: unknown) => e instanceof UnknownError && /inside a message/.test(e.message));
  });

  it("ends a call at its deadline and resets its stream", async () => {
    let reset: Promise<number> | undefined;
    handler = (stream) => (reset = new Promise((resolve) => stream.on("close", () => resolve(stream.rstCode))));
    const started = Date.now();
    const err = await client.version({ timeoutMs: 150 }).catch((e: unknown) => e);
    assert.ok(err instanceof DeadlineExceededError, String(err));
    assert.match(err.message, /within 150 ms/);
    assert.ok(Date.now() - started < 2000);
    assert.equal(await reset, http2.constants.NGHTTP2_CANCEL);
  });

  it("cancels on abort with the signal's reason as the cause", async () => {
    handler = () => {};
    const ac = new AbortController();
    const pending = client.version({ signal: ac.signal }).catch((e: unknown) => e);
    setTimeout(() => ac.abort(new Error("stop")), 20);
    const err = await pending;
    assert.ok(err instanceof CanceledError, String(err));
    assert.equal((err.cause as Error).message, "stop");
  });

  it("reports a dropped connection as UNAVAILABLE and connects again for the next call", async () => {
    handler = (stream) => stream.session?.destroy();
    const err = await client.version().catch((e: unknown) => e);
    assert.ok(err instanceof UnavailableError, String(err));
    handler = (stream) => answer(stream, frame(versionResponse.encode({ version: "back", revision: "" })));
    assert.equal((await client.version()).version, "back");
  });

  it("moves to a new connection after GOAWAY", async () => {
    handler = (stream) => {
      answer(stream, frame(versionResponse.encode({ version: "first", revision: "" })));
      stream.session?.goaway(http2.constants.NGHTTP2_NO_ERROR);
    };
    assert.equal((await client.version()).version, "first");
    await new Promise((r) => setTimeout(r, 50));
    handler = (stream) => answer(stream, frame(versionResponse.encode({ version: "second", revision: "" })));
    assert.equal((await client.version()).version, "second");
  });

  it("refuses metadata gRPC cannot carry before sending anything", async () => {
    let calls = 0;
    handler = (stream) => {
      calls++;
      answer(stream, frame(versionResponse.encode({ version: "x", revision: "" })));
    };
    const err = await client
      .withNamespace("two\nlines")
      .version()
      .catch((e: unknown) => e);
    assert.ok(err instanceof InvalidArgumentError, String(err));
    assert.match(err.message, /namespace "two\\nlines" is not valid/);
    await assert.rejects(client.withLease("l\u00e9ase").version(), InvalidArgumentError);
    assert.equal(calls, 0);
    assert.equal((await client.version()).version, "x", "the connection is still good");
  });

  it("serves many concurrent calls on one connection", async () => {
    handler = (stream, headers) => answer(stream, frame(versionResponse.encode({ version: String(headers["containerd-namespace"]), revision: "" })));
    const views = Array.from({ length: 200 }, (_, i) => client.withNamespace(`n${i}`));
    const got = await Promise.all(views.map((v) => v.version()));
    assert.deepEqual(
      got.map((g) => g.version),
      views.map((_, i) => `n${i}`),
    );
  });

  it("delivers a server stream in order to a slow reader, and cancels it when the reader stops", async () => {
    let closed: Promise<void> | undefined;
    handler = (stream) => {
      closed = new Promise((resolve) => stream.on("close", () => resolve()));
      stream.respond(GRPC);
      for (let i = 0; i < 100; i++) stream.write(frame(envelope.encode({ namespace: "ns-a", topic: `/t/${i}` })));
      // Left open, like an event subscription.
    };
    const topics: string[] = [];
    for await (const e of client.events.subscribe()) {
      topics.push(e.topic);
      if (topics.length % 10 === 0) await new Promise((r) => setTimeout(r, 5));
      if (topics.length === 100) break;
    }
    assert.deepEqual(
      topics,
      Array.from({ length: 100 }, (_, i) => `/t/${i}`),
    );
    await closed;
  });

  describe("request streams", () => {
    let transport: GrpcTransport;
    before(() => {
      transport = new GrpcTransport(`unix://${sock}`);
    });
    after(() => {
      live = undefined;
      transport.close();
    });

    const writeResponse = (offset: number) => frame(encode(WriteContentResponseSchema, { action: WriteAction.WRITE, offset: BigInt(offset) }));
    /** Decodes the requests as they arrive and hands each to `onRequest`. */
    const requests = (stream: http2.ServerHttp2Stream, onRequest: (r: ReturnType<typeof decodeWrite>) => void) => {
      const decoder = new FrameDecoder(64 * 1024 * 1024);
      stream.on("data", (d: Buffer) => {
        for (const m of decoder.push(d)) onRequest(decodeWrite(m));
      });
    };
    const decodeWrite = (m: Buffer) => decode(WriteContentRequestSchema, m);

    it("frames each request, reads answers while sending, and half-closes", async () => {
      let seen: http2.IncomingHttpHeaders = {};
      const got: { action: number; offset: bigint; data: string; labels: Record<string, string> }[] = [];
      live = (stream, headers) => {
        seen = headers;
        stream.respond(GRPC, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        // Answers each request at once: the client must read them while it still sends.
        requests(stream, (r) => {
          got.push({ action: r.action, offset: r.offset, data: Buffer.from(r.data).toString(), labels: r.labels });
          stream.write(writeResponse(got.length));
        });
        stream.on("end", () => stream.end());
      };
      const call = transport.requestStream(Content.method.write, { namespace: "ns-w" }, 0, undefined);
      const answers = (async () => {
        const out: number[] = [];
        for await (const r of call.responses()) out.push(Number(r.offset));
        return out;
      })();
      await call.send({ action: WriteAction.STAT, ref: "r" });
      // An encoded request in parts: the fields, then data (field 6) as its tag, length and two chunks.
      const head = encode(WriteContentRequestSchema, { action: WriteAction.WRITE, offset: 0n });
      await call.sendEncoded([head, Uint8Array.of(0x32, 11), Buffer.from("hello "), Buffer.from("world")]);
      await call.send({ action: WriteAction.COMMIT, offset: 11n, data: Buffer.from("!"), labels: { k: "v" } });
      call.end();
      assert.deepEqual(await answers, [1, 2, 3]);
      assert.equal(seen[":path"], "/containerd.services.content.v1.Content/Write");
      assert.equal(seen["containerd-namespace"], "ns-w");
      assert.equal(seen["grpc-timeout"], undefined, "no deadline was asked for");
      assert.deepEqual(got, [
        { action: WriteAction.STAT, offset: 0n, data: "", labels: {} },
        { action: WriteAction.WRITE, offset: 0n, data: "hello world", labels: {} },
        { action: WriteAction.COMMIT, offset: 11n, data: "!", labels: { k: "v" } },
      ]);
    });

    it("holds send() back while the server reads nothing (flow control), and goes on when it reads", async () => {
      let resume: () => void = () => {};
      let received = 0;
      live = (stream) => {
        stream.pause();
        resume = () => stream.resume();
        stream.respond(GRPC, { waitForTrailers: true });
        stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
        requests(stream, (r) => (received += r.data.length));
        stream.on("end", () => stream.end());
      };
      const call = transport.requestStream(Content.method.write, {}, 0, undefined);
      const drained = (async () => {
        for await (const _ of call.responses());
      })();
      const block = Buffer.alloc(1024 * 1024, 7);
      let sent = 0;
      const sending = (async () => {
        for (let i = 0; i < 16; i++) {
          await call.send({ action: WriteAction.WRITE, data: block });
          sent++;
        }
        call.end();
      })();
      // However long we wait, a server that reads nothing takes no more than its flow-control window.
      await new Promise((r) => setTimeout(r, 100));
      assert.ok(sent < 4, `${sent} MiB went out to a server that read nothing`);
      resume();
      await sending;
      await drained;
      assert.equal(received, 16 * 1024 * 1024);
    });

    it("fails responses and send with the call's typed error (a commit mismatch is DataLossError)", async () => {
      live = (stream) => {
        stream.respond(GRPC, { waitForTrailers: true });
        stream.on("wantTrailers", () =>
          stream.sendTrailers({ "grpc-status": "9", "grpc-message": "unexpected commit digest sha256:aa, expected sha256:bb: failed precondition" }),
        );
        requests(stream, () => stream.end());
      };
      const call = transport.requestStream(Content.method.write, {}, 0, undefined);
      await call.send({ action: WriteAction.COMMIT });
      const err = await (async () => {
        for await (const _ of call.responses());
      })().catch((e: unknown) => e);
      assert.ok(err instanceof DataLossError, String(err));
      assert.match(err.message, /unexpected commit digest/);
      await assert.rejects(call.send({ action: WriteAction.WRITE }), DataLossError);
    });

    it("an answer that ends the call before the client is done makes send() fail", async () => {
      live = (stream) => {
        stream.respond({ ...GRPC, "grpc-status": "0" }, { endStream: true });
      };
      const call = transport.requestStream(Content.method.write, {}, 0, undefined);
      const responses = (async () => {
        for await (const _ of call.responses());
      })();
      await responses;
      await assert.rejects(call.send({ action: WriteAction.WRITE }), UnknownError);
    });

    it("cancels on abort (CanceledError, the stream reset) and ends at its deadline (DeadlineExceededError)", async () => {
      let reset: Promise<number> | undefined;
      let timeout: string | undefined;
      live = (stream, headers) => {
        timeout = headers["grpc-timeout"] as string | undefined;
        stream.pause();
        reset = new Promise((resolve) => stream.on("close", () => resolve(stream.rstCode)));
      };
      const ac = new AbortController();
      const call = transport.requestStream(Content.method.write, {}, 0, { signal: ac.signal });
      const pending = (async () => {
        for (;;) await call.send({ action: WriteAction.WRITE, data: Buffer.alloc(256 * 1024) });
      })().catch((e: unknown) => e);
      const responses = (async () => {
        for await (const _ of call.responses());
      })().catch((e: unknown) => e);
      await new Promise((r) => setTimeout(r, 20));
      ac.abort(new Error("stop"));
      const err = await pending;
      assert.ok(err instanceof CanceledError, String(err));
      assert.equal((err.cause as Error).message, "stop");
      assert.ok((await responses) instanceof CanceledError);
      assert.equal(await reset, http2.constants.NGHTTP2_CANCEL);
      assert.throws(() => transport.requestStream(Content.method.write, {}, 0, { signal: ac.signal }), CanceledError);

      const timed = transport.requestStream(Content.method.write, {}, 150, undefined);
      const late = await (async () => {
        for await (const _ of timed.responses());
      })().catch((e: unknown) => e);
      assert.ok(late instanceof DeadlineExceededError, String(late));
      assert.equal(timeout, "150m");
    });

    it("content.write: a containerd that stops answering is a DeadlineExceededError, and the ingest is aborted", async () => {
      const paths: string[] = [];
      live = (stream, headers) => {
        paths.push(String(headers[":path"]));
        if (headers[":path"] === "/containerd.services.content.v1.Content/Abort") {
          stream.on("data", () => {});
          stream.on("end", () => answer(stream, frame(new Uint8Array(0))));
          return;
        }
        stream.respond(GRPC);
        // Answers STAT, then nothing: containerd hung on its disk.
        requests(stream, (r) => {
          if (r.action === WriteAction.STAT) stream.write(writeResponse(0));
        });
        stream.on("error", () => {});
      };
      const quick = new ContainerdClient({ address: `unix://${sock}`, namespace: "ns-w", timeoutMs: 200 });
      try {
        const data = Buffer.alloc(3 * 1024 * 1024, 1);
        const err = await quick.content.write("ref-1", [data], { digest: `sha256:${"0".repeat(64)}`, size: data.length }).catch((e: unknown) => e);
        assert.ok(err instanceof DeadlineExceededError, String(err));
        assert.match(err.message, /did not answer Content.Write of ref-1 within 200 ms/);
        // The write, then the ref taken again by a Write of ours (no other stream may still hold it), then the Abort.
        assert.deepEqual(paths, [
          "/containerd.services.content.v1.Content/Write",
          "/containerd.services.content.v1.Content/Write",
          "/containerd.services.content.v1.Content/Abort",
        ]);
      } finally {
        await quick.close();
      }
    });
  });
});
