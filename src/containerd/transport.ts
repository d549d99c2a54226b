import * as grpc from "@grpc/grpc-js";
import { CanceledError, type CtrexecError } from "../errors.js";
import { fromGrpcError } from "./errors.js";
import { codec, methodTypes } from "./proto.js";

export interface CallOptions {
  /** Cancels the call; the promise rejects with a CanceledError whose cause is the signal's reason. */
  signal?: AbortSignal | undefined;
  /** Deadline for this call; `0` means none. Defaults to the client's. */
  timeoutMs?: number | undefined;
}

/** Who a call is for: the containerd namespace, and the lease that protects what it makes. */
export interface CallScope {
  namespace?: string | undefined;
  lease?: string | undefined;
}

interface Method {
  path: string;
  label: string;
  serialize: (value: object) => Buffer;
  deserialize: (bytes: Buffer) => unknown;
}

/**
 * One grpc-js channel over containerd's unix socket, shared by every service facade and namespace view.
 * Calls are by path with our own codecs, so no service stubs are generated.
 */
export class GrpcTransport {
  readonly address: string;
  readonly #client: grpc.Client;
  readonly #methods = new Map<string, Method>();
  /** Calls in flight; close() cancels them, since closing a grpc-js channel leaves its calls running. */
  readonly #calls = new Set<grpc.Call>();
  #closed = false;

  constructor(address: string) {
    this.address = address;
    const target = address.startsWith("unix:") ? address : `unix://${address}`;
    this.#client = new grpc.Client(target, grpc.credentials.createInsecure(), {
      "grpc.max_receive_message_length": 64 * 1024 * 1024,
      "grpc.max_send_message_length": 64 * 1024 * 1024,
      // containerd restarts in about a second; reconnect soon after it is back rather than after minutes.
      "grpc.initial_reconnect_backoff_ms": 100,
      "grpc.max_reconnect_backoff_ms": 2000,
      // Per-call bookkeeping we never use: transparent retries (containerd calls are not retried blindly) and
      // channelz statistics.
      "grpc.enable_retries": 0,
      "grpc.enable_channelz": 0,
    });
  }

  #method(service: string, name: string): Method {
    const key = `${service}/${name}`;
    let m = this.#methods.get(key);
    if (m) return m;
    const types = methodTypes(service, name);
    const req = codec(types.request);
    const res = codec(types.response);
    m = {
      path: `/${key}`,
      label: `${service.slice(service.lastIndexOf(".") + 1)}.${name}`,
      serialize: req.encode,
      deserialize: (b) => res.decode(b),
    };
    this.#methods.set(key, m);
    return m;
  }

  #metadata(scope: CallScope): grpc.Metadata {
    const md = new grpc.Metadata();
    if (scope.namespace) md.set("containerd-namespace", scope.namespace);
    // A lease keeps what the call makes (snapshots, content) from containerd's garbage collector.
    if (scope.lease) md.set("containerd-lease", scope.lease);
    return md;
  }

  #error(err: unknown, m: Method, timeoutMs: number, signal: AbortSignal | undefined): CtrexecError {
    return fromGrpcError(err, {
      address: this.address,
      method: m.label,
      timeoutMs: timeoutMs > 0 ? timeoutMs : undefined,
      abortReason: signal?.aborted ? signal.reason : undefined,
    });
  }

  unary<Res>(
    service: string,
    name: string,
    request: object,
    scope: CallScope,
    timeoutMs: number,
    options: CallOptions | undefined,
  ): Promise<Res> {
    const m = this.#method(service, name);
    const signal = options?.signal;
    const timeout = options?.timeoutMs ?? timeoutMs;
    if (signal?.aborted) {
      return Promise.reject(new CanceledError(`containerd ${m.label} was canceled`, { cause: signal.reason }));
    }
    if (this.#closed) {
      return Promise.reject(new CanceledError(`containerd ${m.label}: the client is closed`));
    }
    return new Promise<Res>((resolve, reject) => {
      const callOptions: grpc.CallOptions = timeout > 0 ? { deadline: Date.now() + timeout } : {};
      const onAbort = () => call.cancel();
      const call = this.#client.makeUnaryRequest(
        m.path,
        m.serialize,
        m.deserialize,
        request,
        this.#metadata(scope),
        callOptions,
        (err, value) => {
          this.#calls.delete(call);
          signal?.removeEventListener("abort", onAbort);
          if (err) reject(this.#error(err, m, timeout, signal));
          else resolve(value as Res);
        },
      );
      this.#calls.add(call);
      signal?.addEventListener("abort", onAbort, { once: true });
    });
  }

  /** A server stream as an async iterable; breaking out of the loop or aborting cancels the call. */
  async *serverStream<Res>(
    service: string,
    name: string,
    request: object,
    scope: CallScope,
    options: CallOptions | undefined,
  ): AsyncGenerator<Res, void, undefined> {
    const m = this.#method(service, name);
    const signal = options?.signal;
    if (signal?.aborted) throw new CanceledError(`containerd ${m.label} was canceled`, { cause: signal.reason });
    if (this.#closed) throw new CanceledError(`containerd ${m.label}: the client is closed`);
    const call = this.#client.makeServerStreamRequest(
      m.path,
      m.serialize,
      m.deserialize,
      request,
      this.#metadata(scope),
      options?.timeoutMs ? { deadline: Date.now() + options.timeoutMs } : {},
    );
    const onAbort = () => call.cancel();
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#calls.add(call);
    try {
      for await (const value of call) yield value as Res;
    } catch (err) {
      throw this.#error(err, m, options?.timeoutMs ?? 0, signal);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      this.#calls.delete(call);
      call.cancel();
    }
  }

  /** Closes the channel; calls in flight fail with CanceledError, later calls are refused. Idempotent. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const call of this.#calls) call.cancel();
    this.#calls.clear();
    this.#client.close();
  }
}
