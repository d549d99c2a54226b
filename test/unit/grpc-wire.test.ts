import assert from "node:assert/strict";
import { describe, it } from "node:test";
import {
  decodeGrpcMessage,
  FrameDecoder,
  frame,
  GrpcStatusError,
  Status,
  statusFromHttp,
  statusFromMetadata,
  statusFromReset,
  timeoutHeader,
} from "../../src/containerd/grpc-wire.js";

describe("gRPC framing", () => {
  it("prefixes a message with an uncompressed flag and its big-endian length", () => {
    const f = frame(Buffer.from("abc"));
    assert.deepEqual([...f], [0, 0, 0, 0, 3, 0x61, 0x62, 0x63]);
    assert.deepEqual([...frame(new Uint8Array(0))], [0, 0, 0, 0, 0]);
  });

  it("decodes messages however the chunks fall, including empty messages", () => {
    const messages = [Buffer.from("hello"), Buffer.alloc(0), Buffer.alloc(70_000, 7), Buffer.from("x")];
    const wire = Buffer.concat(messages.map(frame));
    for (const size of [1, 2, 3, 5, 6, 7, 4096, wire.length]) {
      const d = new FrameDecoder(1 << 20);
      const out: Buffer[] = [];
      for (let i = 0; i < wire.length; i += size) out.push(...d.push(wire.subarray(i, i + size)));
      assert.deepEqual(out, messages, `chunks of ${size}`);
      assert.equal(d.partial, false);
    }
  });

  it("knows when a response stopped inside a message", () => {
    const d = new FrameDecoder(100);
    assert.deepEqual(d.push(frame(Buffer.from("abcdef")).subarray(0, 7)), []);
    assert.equal(d.partial, true);
    const prefixOnly = new FrameDecoder(100);
    prefixOnly.push(Buffer.from([0, 0, 0]));
    assert.equal(prefixOnly.partial, true);
  });

  it("refuses messages over the limit and compressed messages", () => {
    const big = new FrameDecoder(10);
    assert.throws(
      () => big.push(frame(Buffer.alloc(11))),
      (e: unknown) => e instanceof GrpcStatusError && e.code === Status.RESOURCE_EXHAUSTED && /11 bytes/.test(e.details),
    );
    const compressed = Buffer.from([1, 0, 0, 0, 1, 9]);
    assert.throws(
      () => new FrameDecoder(10).push(compressed),
      (e: unknown) => e instanceof GrpcStatusError && e.code === Status.INTERNAL,
    );
  });
});

describe("gRPC status", () => {
  it("reads grpc-status and the percent-encoded grpc-message", () => {
    assert.deepEqual(statusFromMetadata({ "grpc-status": "5", "grpc-message": 'container "a%20b" not found%3A x' }), {
      code: Status.NOT_FOUND,
      details: 'container "a b" not found: x',
    });
    assert.deepEqual(statusFromMetadata({ "grpc-status": "0" }), { code: Status.OK, details: "" });
    assert.equal(statusFromMetadata({ ":status": "200" }), undefined);
  });

  it("treats an unknown or malformed code as UNKNOWN", () => {
    assert.equal(statusFromMetadata({ "grpc-status": "99" })?.code, Status.UNKNOWN);
    assert.equal(statusFromMetadata({ "grpc-status": "x" })?.code, Status.UNKNOWN);
  });

  it("keeps malformed escapes and decodes UTF-8 ones", () => {
    assert.equal(decodeGrpcMessage("100%"), "100%");
    assert.equal(decodeGrpcMessage("%E2%9C%93 ok %ZZ"), "✓ ok %ZZ");
    assert.equal(decodeGrpcMessage("%FF%41 x"), "%FF%41 x"); // a malformed run stays raw, as the spec allows
    assert.equal(decodeGrpcMessage("plain"), "plain");
  });

  it("maps HTTP statuses and stream resets the way gRPC specifies", () => {
    assert.equal(statusFromHttp(404), Status.UNIMPLEMENTED);
    assert.equal(statusFromHttp(503), Status.UNAVAILABLE);
    assert.equal(statusFromHttp(401), Status.UNAUTHENTICATED);
    assert.equal(statusFromHttp(500), Status.UNKNOWN);
    assert.equal(statusFromReset(7), Status.UNAVAILABLE);
    assert.equal(statusFromReset(8), Status.CANCELLED);
    assert.equal(statusFromReset(11), Status.RESOURCE_EXHAUSTED);
    assert.equal(statusFromReset(2), Status.INTERNAL);
  });

  it("names the code in the error's message", () => {
    const e = new GrpcStatusError(Status.NOT_FOUND, "gone");
    assert.equal(e.message, "5 NOT_FOUND: gone");
    assert.equal(e.details, "gone");
  });
});

describe("grpc-timeout", () => {
  it("uses milliseconds while they fit in eight digits, then coarser units", () => {
    assert.equal(timeoutHeader(60_000), "60000m");
    assert.equal(timeoutHeader(0.2), "1m");
    assert.equal(timeoutHeader(99_999_999), "99999999m");
    assert.equal(timeoutHeader(100_000_000), "100000S");
    assert.equal(timeoutHeader(1e12), "277778H");
  });
});
