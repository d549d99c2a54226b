import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { fromGrpcError } from "../../src/containerd/errors.js";
import { GrpcStatusError, Status, type StatusCode } from "../../src/containerd/grpc-wire.js";
import {
  AlreadyExistsError,
  CanceledError,
  CtrexecError,
  DeadlineExceededError,
  ExitError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnknownError,
} from "../../src/errors.js";

const statusError = (code: StatusCode, details: string) => new GrpcStatusError(code, details);

const ctx = { address: "/run/containerd/containerd.sock", method: "Tasks.Create" };

describe("gRPC status mapping", () => {
  const cases: [StatusCode, new (...a: never[]) => CtrexecError, string][] = [
    [Status.NOT_FOUND, NotFoundError, "NOT_FOUND"],
    [Status.ALREADY_EXISTS, AlreadyExistsError, "ALREADY_EXISTS"],
    [Status.FAILED_PRECONDITION, FailedPreconditionError, "FAILED_PRECONDITION"],
    [Status.INVALID_ARGUMENT, InvalidArgumentError, "INVALID_ARGUMENT"],
    [Status.UNAVAILABLE, UnavailableError, "UNAVAILABLE"],
    [Status.CANCELLED, CanceledError, "CANCELED"],
    [Status.DEADLINE_EXCEEDED, DeadlineExceededError, "DEADLINE_EXCEEDED"],
    [Status.UNKNOWN, UnknownError, "UNKNOWN"],
    [Status.INTERNAL, UnknownError, "UNKNOWN"],
  ];
  for (const [code, cls, name] of cases) {
    it(`maps status ${code} to ${cls.name} (${name})`, () => {
      const raw = statusError(code, "the daemon's words");
      const err = fromGrpcError(raw, ctx);
      assert.ok(err instanceof cls);
      assert.equal(err.code, name);
      assert.equal(err.cause, raw);
      assert.ok(CtrexecError.is(err));
    });
  }

  it("keeps the daemon's message for ordinary errors", () => {
    const err = fromGrpcError(statusError(Status.NOT_FOUND, 'container "x" in namespace "y": not found'), ctx);
    assert.equal(err.message, 'container "x" in namespace "y": not found');
  });

  it("says where it looked and what to do when containerd is unreachable", () => {
    const details = "connect ENOENT /x";
    const err = fromGrpcError(statusError(Status.UNAVAILABLE, details), ctx);
    assert.match(err.message, /^containerd is not reachable at \/run\/containerd\/containerd\.sock \(no socket at that path\)/);
    assert.match(err.message, /Is containerd running\?/);
  });

  it("names the call and its deadline when it timed out", () => {
    const err = fromGrpcError(statusError(Status.DEADLINE_EXCEEDED, "Deadline exceeded"), { ...ctx, timeoutMs: 500 });
    assert.match(err.message, /did not answer Tasks\.Create within 500 ms/);
  });

  it("uses the abort reason as the cause of a canceled call", () => {
    const reason = new Error("user pressed ^C");
    const err = fromGrpcError(statusError(Status.CANCELLED, "Cancelled on client"), { ...ctx, abortReason: reason });
    assert.equal(err.cause, reason);
  });

  it("wraps errors that are not gRPC statuses as UnknownError", () => {
    const err = fromGrpcError(new TypeError("boom"), ctx);
    assert.ok(err instanceof UnknownError);
    assert.match(err.message, /Tasks\.Create: boom/);
  });
});

describe("ExitError", () => {
  it("carries the exit code and the signal of a 128+n code", () => {
    const e = new ExitError(137);
    assert.equal(e.exitCode, 137);
    assert.equal(e.signal, 9);
    assert.equal(e.message, "exit code: 137");
    assert.equal(e.code, "EXITED");
    assert.equal(e.name, "ExitError");
    assert.equal(new ExitError(3).signal, undefined);
  });

  it("says when the process was killed for memory", () => {
    const e = new ExitError(137, { oomKilled: true });
    assert.equal(e.oomKilled, true);
    assert.match(e.message, /out of memory/);
  });

  it("brands errors so copies of the package recognise each other", () => {
    assert.ok(CtrexecError.is(new NotFoundError("x")));
    assert.equal(CtrexecError.is(new Error("x")), false);
    assert.equal(CtrexecError.is({ code: "NOT_FOUND" }), false);
    assert.equal(new NotFoundError("x").name, "NotFoundError");
  });
});
