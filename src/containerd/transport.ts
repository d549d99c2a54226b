import http2 from "node:http2";
import net from "node:net";
import {
  create,
  type DescMessage,
  type DescMethod,
  type DescMethodBiDiStreaming,
  type DescMethodClientStreaming,
  type DescMethodServerStreaming,
  type DescMethodUnary,
  fromBinary,
  type MessageInitShape,
  type MessageShape,
  toBinary,
} from "@bufbuild/protobuf";
import { CanceledError, type CtrexecError } from "../errors.js";
import { fromGrpcError } from "./errors.js";
import {
  FrameDecoder,
  frame,
  GrpcStatusError,
  Status,
  type StatusCode,
  statusFromHttp,
  statusFromMetadata,
  statusFromReset,
  timeoutHeader,
} from "./grpc-wire.js";

export interface CallOptions {
  /** Cancels the call; the promise rejects with a CanceledError whose cause is the signal's reason. */
  signal?: AbortSignal | undefined;
  /** Deadline for this call; `0` means none. Defaults to the client's. */
  timeoutMs?: number | undefined;
  /** The call does not keep the process alive (a watch that lasts as long as its owner, not a request). */
  background?: boolean | undefined;
}

/** Who a call is for: the containerd namespace, and the lease that protects what it makes. */
export interface CallScope {
  namespace?: string | undefined;
  lease?: string | undefined;
}

/** What the transport needs of a generated method descriptor, worked out once per method. */
interface Method {
  path: string;
  label: string;
}

/** Where a call's messages and its end go. */
interface Sink {
  onMessage(message: Buffer): void;
  /** Called once: undefined for OK, else why the call failed. */
  onEnd(error: unknown): void;
}

/** A call in flight, as the transport's close() and a server stream's consumer see it. */
interface Call {
  /** Ends the call with this status (if it has not ended) and resets its stream. */
  abort(error: GrpcStatusError): void;
  pause(): void;
  resume(): void;
  /**
   * Request bytes of a streaming call. Resolves once the stream has passed them on to the connection (which HTTP/2
   * flow control paces), or at once when the call has ended: the caller looks at how it ended.
   */
  write(data: readonly Buffer[]): Promise<void>;
  /** Half-closes the request side of a streaming call. */
  endRequests(): void;
}

/**
 * A call whose requests are a stream (client or bidirectional streaming). Requests and responses flow at once:
 * read `responses()` while sending, or a server that answers each request stalls once flow control fills up.
 */
export interface RequestStream<I extends DescMessage, O extends DescMessage> {
  /**
   * Sends one request. Resolves when the transport can take the next one (so awaiting it bounds what is buffered);
   * rejects with the call's typed error if it has failed, or an UnknownError if the server ended it first.
   */
  send(request: MessageInitShape<I>): Promise<void>;
  /**
   * Sends one request its caller encoded: the parts, in order, are the message's bytes. None is copied, so a large
   * field can go out as the chunks it arrived in. Resolves and rejects as `send` does.
   */
  sendEncoded(parts: readonly Uint8Array[]): Promise<void>;
  /** No more requests (half-close). Idempotent. */
  end(): void;
  /** The responses as they arrive; finishes when the call ends OK, throws its typed error otherwise. Read once. */
  responses(): AsyncGenerator<MessageShape<O>, void, undefined>;
  /** Ends the call with a CanceledError (if it has not ended) and resets its stream. */
  cancel(): void;
}

/** One HTTP/2 connection and how many calls use it, so that it keeps the process alive only while they run. */
interface Connection {
  session: http2.ClientHttp2Session;
  active: number;
}

const MAX_MESSAGE_BYTES = 64 * 1024 * 1024;
/** Flow-control windows: a stream's and the connection's, so that snapshot lists and content reads do not stall. */
const STREAM_WINDOW = 4 * 1024 * 1024;
const CONNECTION_WINDOW = 16 * 1024 * 1024;
/** A server stream's consumer that falls this far behind pauses the stream (HTTP/2 flow control does the rest). */
const STREAM_HIGH_WATER = 16;

/**
 * A streaming call's answers as they arrive, read by one loop: the call is paused while this many wait, and
 * resumed once they are read, so a slow reader holds back the server instead of filling memory.
 */
class ResponseQueue {
  readonly #messages: Buffer[] = [];
  #wake: (() => void) | undefined;
  #call: Call | undefined;
  done = false;
  failure: unknown;
  readonly sink: Sink = {
    onMessage: (message) => {
      this.#messages.push(message);
      if (this.#messages.length >= STREAM_HIGH_WATER) this.#call?.pause();
      this.#wake?.();
    },
    onEnd: (error) => {
      this.done = true;
      this.failure = error;
      this.#wake?.();
    },
  };

  attach(call: Call): Call {
    this.#call = call;
    return call;
  }

  /** The answers until the call ends; its failure, if any, is thrown as `fail` makes it. */
  async *messages(fail: (failure: unknown) => Error): AsyncGenerator<Buffer, void, undefined> {
    for (;;) {
      const message = this.#messages.shift();
      if (message) {
        if (this.#messages.length === 0) this.#call?.resume();
        yield message;
        continue;
      }
      if (this.done) {
        if (this.failure) throw fail(this.failure);
        return;
      }
      await new Promise<void>((resolve) => (this.#wake = resolve));
      this.#wake = undefined;
    }
  }
}
/** What `session.request()` throws when the session it was called on can serve no more streams. */
const SESSION_GONE = new Set(["ERR_HTTP2_INVALID_SESSION", "ERR_HTTP2_GOAWAY_SESSION"]);

/**
 * gRPC over one HTTP/2 connection to containerd's unix socket (node:http2, no gRPC library), shared by every
 * service facade and namespace view. Only what containerd needs: unary and server-streaming calls, deadlines,
 * cancellation, metadata; messages are never compressed. A lost connection fails the calls on it with
 * UNAVAILABLE and the next call connects again.
 */
export class GrpcTransport {
  readonly address: string;
  readonly #socketPath: string;
  readonly #methods = new Map<DescMethod, Method>();
  readonly #calls = new Set<Call>();
  #connection: Connection | undefined;
  #closed = false;

  constructor(address: string) {
    this.address = address;
    this.#socketPath = address.replace(/^unix:(\/\/)?/, "");
  }

  #method(method: DescMethod): Method {
    let m = this.#methods.get(method);
    if (m) return m;
    // The HTTP/2 path is /<package>.<Service>/<Method>, with the names as proto/ spells them.
    m = { path: `/${method.parent.typeName}/${method.name}`, label: `${method.parent.name}.${method.name}` };
    this.#methods.set(method, m);
    return m;
  }

  #connect(): Connection {
    const current = this.#connection;
    if (current && !current.session.closed && !current.session.destroyed) return current;
    const session = http2.connect("http://localhost", {
      createConnection: () => net.connect(this.#socketPath),
      settings: { enablePush: false, initialWindowSize: STREAM_WINDOW },
      // Buffered but unread response data counts against this (MB); a 64 MiB message must fit.
      maxSessionMemory: 128,
    });
    const connection: Connection = { session, active: 0 };
    session.once("connect", () => session.setLocalWindowSize(CONNECTION_WINDOW));
    // A connection that failed, was told to go away or closed serves no new calls; calls on it see their own
    // stream's error. The listener also keeps a session error from being thrown.
    const drop = () => {
      if (this.#connection === connection) this.#connection = undefined;
    };
    session.on("error", drop);
    session.on("goaway", drop);
    session.on("close", drop);
    this.#connection = connection;
    return connection;
  }

  #headers(m: Method, scope: CallScope, timeoutMs: number): http2.OutgoingHttpHeaders {
    const headers: http2.OutgoingHttpHeaders = {
      ":method": "POST",
      ":path": m.path,
      "content-type": "application/grpc",
      te: "trailers",
      "user-agent": "ctrexec",
    };
    if (timeoutMs > 0) headers["grpc-timeout"] = timeoutHeader(timeoutMs);
    if (scope.namespace) headers["containerd-namespace"] = scope.namespace;
    // A lease keeps what the call makes (snapshots, content) from containerd's garbage collector.
    if (scope.lease) headers["containerd-lease"] = scope.lease;
    return headers;
  }

  #request(headers: http2.OutgoingHttpHeaders): { connection: Connection; stream: http2.ClientHttp2Stream } {
    let connection = this.#connect();
    try {
      return { connection, stream: connection.session.request(headers) };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code ?? "";
      if (!SESSION_GONE.has(code)) throw err;
      // The session went away between the check and the request (GOAWAY in between): one fresh connection.
      if (this.#connection === connection) this.#connection = undefined;
      connection = this.#connect();
      return { connection, stream: connection.session.request(headers) };
    }
  }

  /** Starts a call; the sink hears its messages and, once, its end. `body` undefined: requests are streamed. */
  #start(m: Method, body: Buffer | undefined, scope: CallScope, timeoutMs: number, options: CallOptions | undefined, sink: Sink): Call {
    const signal = options?.signal;
    let ended = false;
    /** A status we decided on (cancel, deadline, a bad frame), which wins over whatever the stream says later. */
    let local: GrpcStatusError | undefined;
    let stream: http2.ClientHttp2Stream | undefined;
    let connection: Connection | undefined;
    let timer: NodeJS.Timeout | undefined;
    let counted = false;

    const end = (error: unknown) => {
      if (ended) return;
      ended = true;
      if (timer) clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      this.#calls.delete(call);
      if (connection && counted && --connection.active === 0) connection.session.unref();
      sink.onEnd(error);
    };
    const call: Call = {
      abort: (error) => {
        if (ended || local) return;
        local = error;
        if (stream && !stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
        else end(error);
      },
      pause: () => stream?.pause(),
      resume: () => stream?.resume(),
      write: (data) =>
        new Promise<void>((resolve) => {
          const s = stream;
          if (ended || local || !s || s.destroyed || s.writableEnded) return resolve();
          let room = true;
          for (const d of data) room = s.write(d);
          if (room) return resolve();
          const done = () => {
            s.off("drain", done);
            s.off("close", done);
            resolve();
          };
          s.on("drain", done);
          s.on("close", done);
        }),
      endRequests: () => {
        if (stream && !stream.destroyed && !stream.writableEnded) stream.end();
      },
    };
    const onAbort = () => call.abort(new GrpcStatusError(Status.CANCELLED, "canceled by the caller"));

    try {
      for (const [what, value] of [
        ["namespace", scope.namespace],
        ["lease", scope.lease],
      ] as const) {
        // gRPC metadata is printable ASCII; anything else would only get a protocol error back.
        if (value && !/^[\x20-\x7e]*$/.test(value)) {
          throw new GrpcStatusError(
            Status.INVALID_ARGUMENT,
            `containerd ${what} ${JSON.stringify(value)} is not valid: use letters, digits, ".", "_" and "-"`,
          );
        }
      }
      ({ connection, stream } = this.#request(this.#headers(m, scope, timeoutMs)));
    } catch (err) {
      // A request we could not even send: a bad message or header is ours, anything else the connection's.
      const invalid = (err as NodeJS.ErrnoException).code === "ERR_HTTP2_INVALID_HEADER_VALUE" || err instanceof TypeError;
      end(
        err instanceof GrpcStatusError
          ? err
          : new GrpcStatusError(invalid ? Status.INVALID_ARGUMENT : Status.UNAVAILABLE, (err as Error).message ?? String(err), { cause: err }),
      );
      return call;
    }
    this.#calls.add(call);
    counted = !options?.background;
    if (counted && connection.active++ === 0) connection.session.ref();
    signal?.addEventListener("abort", onAbort, { once: true });
    if (timeoutMs > 0) {
      // containerd enforces grpc-timeout too; ours also covers a daemon that never answers at all.
      timer = setTimeout(() => call.abort(new GrpcStatusError(Status.DEADLINE_EXCEEDED, "Deadline exceeded")), timeoutMs);
      if (!counted) timer.unref();
    }

    const s = stream;
    const decoder = new FrameDecoder(MAX_MESSAGE_BYTES);
    let httpStatus = 0;
    let status: { code: StatusCode; details: string } | undefined;
    let streamError: (Error & { code?: string; cause?: unknown }) | undefined;
    // A status ends the call: a request stream the server no longer reads is half-closed so that the stream can
    // close (a server that does not reset it would otherwise leave the call open).
    const over = () => {
      if (!body && !s.writableEnded && !s.destroyed) s.end();
    };
    s.on("response", (headers) => {
      httpStatus = Number(headers[":status"] ?? 0);
      status = statusFromMetadata(headers); // a trailers-only response
      if (status) over();
    });
    s.on("data", (chunk: Buffer) => {
      if (local) return;
      try {
        for (const message of decoder.push(chunk)) sink.onMessage(message);
      } catch (err) {
        call.abort(err instanceof GrpcStatusError ? err : new GrpcStatusError(Status.INTERNAL, `bad response: ${String(err)}`));
      }
    });
    s.on("trailers", (trailers) => {
      status = statusFromMetadata(trailers) ?? { code: Status.UNKNOWN, details: "the server sent trailers without a status" };
      over();
    });
    s.on("error", (err: Error) => (streamError = err));
    s.on("close", () => {
      if (local) return end(local);
      if (status) {
        if (status.code !== Status.OK) return end(new GrpcStatusError(status.code, status.details));
        if (decoder.partial) return end(new GrpcStatusError(Status.INTERNAL, "the response ended inside a message"));
        return end(undefined);
      }
      if (httpStatus !== 0 && httpStatus !== 200) {
        return end(new GrpcStatusError(statusFromHttp(httpStatus), `the server answered HTTP ${httpStatus}`));
      }
      const session = connection?.session;
      if (session && (session.destroyed || session.closed) && !status) {
        // containerd went away (restart, crash): node resets the streams of a dead connection with CANCEL, but
        // nobody canceled these calls; the caller may retry once containerd is back.
        const cause = streamError?.cause instanceof Error ? streamError.cause : streamError;
        return end(new GrpcStatusError(Status.UNAVAILABLE, cause?.message ?? "the connection to containerd was lost", { cause }));
      }
      if (streamError) {
        // A connection that failed or broke; connect errors come as the cause ("connect ENOENT /path").
        const cause = streamError.cause instanceof Error ? streamError.cause : undefined;
        if (streamError.code === "ERR_HTTP2_STREAM_ERROR" && !cause) {
          return end(new GrpcStatusError(statusFromReset(s.rstCode ?? 0), streamError.message, { cause: streamError }));
        }
        return end(new GrpcStatusError(Status.UNAVAILABLE, (cause ?? streamError).message, { cause: streamError }));
      }
      if (s.rstCode) return end(new GrpcStatusError(statusFromReset(s.rstCode), `the stream was reset (code ${s.rstCode})`));
      end(new GrpcStatusError(Status.UNAVAILABLE, "the connection ended before the call did"));
    });
    if (body) s.end(body);
    return call;
  }

  #error(err: unknown, m: Method, timeoutMs: number, signal: AbortSignal | undefined): CtrexecError {
    return fromGrpcError(err, {
      address: this.address,
      method: m.label,
      timeoutMs: timeoutMs > 0 ? timeoutMs : undefined,
      abortReason: signal?.aborted ? signal.reason : undefined,
    });
  }

  #refuse(m: Method, signal: AbortSignal | undefined): CanceledError | undefined {
    if (signal?.aborted) return new CanceledError(`containerd ${m.label} was canceled`, { cause: signal.reason });
    if (this.#closed) return new CanceledError(`containerd ${m.label}: the client is closed`);
    return undefined;
  }

  /** A request's gRPC frame; a request that does not encode is the caller's error (InvalidArgument), not the connection's. */
  #encode<I extends DescMessage>(
    method: DescMethod & { input: I },
    request: MessageInitShape<I>,
    m: Method,
    timeoutMs: number,
    signal: AbortSignal | undefined,
  ): Buffer {
    try {
      return frame(toBinary(method.input, create(method.input, request)));
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw this.#error(new GrpcStatusError(Status.INVALID_ARGUMENT, `bad request: ${why}`, { cause: err }), m, timeoutMs, signal);
    }
  }

  /** A response message, decoded; a message that does not decode is an INTERNAL error of the call. */
  #decode<O extends DescMessage>(output: O, message: Buffer, m: Method, timeoutMs: number, signal: AbortSignal | undefined): MessageShape<O> {
    try {
      return fromBinary(output, message);
    } catch (err) {
      throw this.#error(new GrpcStatusError(Status.INTERNAL, `bad response: ${String(err)}`), m, timeoutMs, signal);
    }
  }

  /** A unary call of a generated method: the request is encoded from its fields, the response decoded. */
  unary<I extends DescMessage, O extends DescMessage>(
    method: DescMethodUnary<I, O>,
    request: MessageInitShape<I>,
    scope: CallScope,
    timeoutMs: number,
    options: CallOptions | undefined,
  ): Promise<MessageShape<O>> {
    const m = this.#method(method);
    const signal = options?.signal;
    const timeout = options?.timeoutMs ?? timeoutMs;
    const refused = this.#refuse(m, signal);
    if (refused) return Promise.reject(refused);
    let body: Buffer;
    try {
      body = this.#encode(method, request, m, timeout, signal);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise<MessageShape<O>>((resolve, reject) => {
      let response: Buffer | undefined;
      const call = this.#start(m, body, scope, timeout, options, {
        onMessage: (message) => {
          if (response) call.abort(new GrpcStatusError(Status.INTERNAL, "more than one response to a unary call"));
          response = message;
        },
        onEnd: (error) => {
          if (error) return reject(this.#error(error, m, timeout, signal));
          if (!response) return reject(this.#error(new GrpcStatusError(Status.INTERNAL, "no response message"), m, timeout, signal));
          try {
            resolve(this.#decode(method.output, response, m, timeout, signal));
          } catch (err) {
            reject(err);
          }
        },
      });
    });
  }

  /** A server stream as an async iterable; breaking out of the loop or aborting cancels the call. */
  async *serverStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodServerStreaming<I, O>,
    request: MessageInitShape<I>,
    scope: CallScope,
    options: CallOptions | undefined,
  ): AsyncGenerator<MessageShape<O>, void, undefined> {
    const m = this.#method(method);
    const signal = options?.signal;
    const timeout = options?.timeoutMs ?? 0;
    const refused = this.#refuse(m, signal);
    if (refused) throw refused;
    const body = this.#encode(method, request, m, timeout, signal);
    const answers = new ResponseQueue();
    const call = answers.attach(this.#start(m, body, scope, timeout, options, answers.sink));
    try {
      for await (const message of answers.messages((failure) => this.#error(failure, m, timeout, signal))) {
        yield this.#decode(method.output, message, m, timeout, signal);
      }
    } finally {
      call.abort(new GrpcStatusError(Status.CANCELLED, "the consumer stopped reading"));
    }
  }

  /**
   * A call with a stream of requests. Like the other calls it has a deadline (`timeoutMs`, 0 for none), is canceled
   * by `options.signal` and fails with typed errors. A refused call (closed client, aborted signal) throws here.
   */
  requestStream<I extends DescMessage, O extends DescMessage>(
    method: DescMethodBiDiStreaming<I, O> | DescMethodClientStreaming<I, O>,
    scope: CallScope,
    timeoutMs: number,
    options: CallOptions | undefined,
  ): RequestStream<I, O> {
    const m = this.#method(method);
    const signal = options?.signal;
    const timeout = options?.timeoutMs ?? timeoutMs;
    const refused = this.#refuse(m, signal);
    if (refused) throw refused;
    const answers = new ResponseQueue();
    let reading = false;
    const call = answers.attach(this.#start(m, undefined, scope, timeout, options, answers.sink));
    const ended = (): CtrexecError | undefined => {
      if (!answers.done) return undefined;
      return this.#error(
        answers.failure ?? new GrpcStatusError(Status.INTERNAL, "the server ended the call before the client sent all its requests"),
        m,
        timeout,
        signal,
      );
    };
    const transport = this;
    const sendEncoded = async (parts: readonly Uint8Array[]) => {
      const before = ended();
      if (before) throw before;
      let length = 0;
      for (const part of parts) length += part.byteLength;
      if (length > MAX_MESSAGE_BYTES) {
        throw transport.#error(new GrpcStatusError(Status.INVALID_ARGUMENT, `a request of ${length} bytes is over the limit`), m, timeout, signal);
      }
      // The prefix and the parts go as separate writes: no copy of a large message just to put 5 bytes before it.
      const prefix = Buffer.allocUnsafe(5);
      prefix[0] = 0;
      prefix.writeUInt32BE(length, 1);
      const buffers: Buffer[] = [prefix];
      for (const part of parts) if (part.byteLength > 0) buffers.push(Buffer.from(part.buffer, part.byteOffset, part.byteLength));
      await call.write(buffers);
      const after = ended();
      if (after) throw after;
    };
    return {
      send: (request) => {
        let message: Uint8Array;
        try {
          message = toBinary(method.input, create(method.input, request));
        } catch (err) {
          const why = err instanceof Error ? err.message : String(err);
          return Promise.reject(
            transport.#error(new GrpcStatusError(Status.INVALID_ARGUMENT, `bad request: ${why}`, { cause: err }), m, timeout, signal),
          );
        }
        return sendEncoded([message]);
      },
      sendEncoded,
      end: () => call.endRequests(),
      cancel: () => call.abort(new GrpcStatusError(Status.CANCELLED, "canceled by the caller")),
      async *responses() {
        if (reading) throw new TypeError("responses() of a call can be read only once");
        reading = true;
        try {
          for await (const message of answers.messages((failure) => transport.#error(failure, m, timeout, signal))) {
            yield transport.#decode(method.output, message, m, timeout, signal);
          }
        } finally {
          if (!answers.done) call.abort(new GrpcStatusError(Status.CANCELLED, "the consumer stopped reading"));
        }
      },
    };
  }

  /** Closes the connection; calls in flight fail with CanceledError, later calls are refused. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const call of [...this.#calls]) call.abort(new GrpcStatusError(Status.CANCELLED, "the client is closed"));
    const connection = this.#connection;
    this.#connection = undefined;
    // Streams just reset still have frames to write; close() lets them go out, then ends the connection.
    connection?.session.close();
  }
}
