/**
 * One HTTP exchange over node:http/https, and reading its body. node:http rather than fetch/undici: it gives
 * manual redirects with per-hop headers, a per-request TLS trust store, a real idle timeout (time the registry
 * is silent while we wait for it, not time our consumer holds the stream paused) and TCP backpressure on the
 * body through pause/resume, all without an extra dependency.
 */
import type { ClientRequest, IncomingMessage } from "node:http";
import http from "node:http";
import https from "node:https";
import type { Socket } from "node:net";
import { isIP } from "node:net";
import { Readable } from "node:stream";
import tls from "node:tls";
import { CanceledError, DataLossError, FailedPreconditionError, UnavailableError } from "../errors.js";
import { agentFor } from "./agents.js";
import { printable } from "./registry-errors.js";

/** Why a request got no response: what the caller's retry and fallback decisions need. */
export type FailureKind = "connect" | "idle" | "tls-protocol" | "tls-trust";

export class TransportFailure extends Error {
  readonly kind: FailureKind;
  readonly code: string | undefined;
  constructor(kind: FailureKind, message: string, code?: string, options?: ErrorOptions) {
    super(message, options);
    this.kind = kind;
    this.code = code;
  }
}

/** A body that ended before its length: retrying the request may help (a reset connection), unlike a wrong digest. */
export class TruncatedBodyError extends DataLossError {}

export interface SendInit {
  method: "GET" | "HEAD";
  headers: Record<string, string>;
  signal: AbortSignal | undefined;
  idleTimeoutMs: number;
  caCerts: readonly (string | Buffer)[] | undefined;
  /** "manifest x:y from registry h" — for messages. */
  what: string;
  /** Called once the connection is set up (for https: its TLS handshake completed), before any response. */
  onSecured?: () => void;
  /**
   * Whether the host may be served over plain HTTP (loopback, insecure): then a connection reset during the TLS
   * handshake may be a plain-HTTP server hanging up on the ClientHello, a protocol failure. For any other host it
   * is a network failure, and retried like one.
   */
  plainHttpAllowed?: boolean;
}

export function canceled(what: string, signal: AbortSignal | undefined): CanceledError {
  return new CanceledError(`canceled while fetching ${what}`, { cause: signal?.reason });
}

const TRUST_CODES = /CERT|SELF_SIGNED|VERIFY|ALTNAME|ISSUER/;

/** Connections whose set-up (TCP, and TLS for https) is done. */
const established = new WeakSet<Socket>();

/** Sends one request; resolves with the response once its headers are in (any status). */
export function send(url: URL, init: SendInit): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    if (init.signal?.aborted) {
      reject(canceled(init.what, init.signal));
      return;
    }
    const isTls = url.protocol === "https:";
    let secured = false;
    let settled = false;
    let timer: NodeJS.Timeout | undefined;
    // Takes our listeners off a connection whose set-up never finished by the time the request ended (one
    // that ends here is destroyed, but nothing is left on a socket in any case).
    let detach = () => {};
    const finish = () => {
      settled = true;
      clearTimeout(timer);
      init.signal?.removeEventListener("abort", onAbort);
      detach();
    };
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        req.destroy(new TransportFailure("idle", `sent nothing for ${seconds(init.idleTimeoutMs)} s`));
      }, init.idleTimeoutMs);
    };
    const onSecured = () => {
      secured = true;
      init.onSecured?.();
    };
    const onAbort = () => req.destroy(canceled(init.what, init.signal));
    const req: ClientRequest = (isTls ? https : http).request(
      url,
      { method: init.method, headers: init.headers, agent: agentFor(url.protocol, init.caCerts) },
      (res) => {
        finish();
        resolve(res);
      },
    );
    req.on("socket", (socket: Socket) => {
      // A kept-alive connection is already set up, and gets no listeners: every request would add its own to it.
      if (established.has(socket)) {
        onSecured();
        return;
      }
      // Each step of setting up a connection gets its own idle period.
      const onTcp = () => arm();
      const onReady = () => {
        established.add(socket);
        detach = () => {};
        arm();
        onSecured();
      };
      const ready = isTls ? "secureConnect" : "connect";
      if (isTls) socket.once("connect", onTcp);
      socket.once(ready, onReady);
      detach = () => {
        socket.off("connect", onTcp);
        socket.off(ready, onReady);
      };
      if (settled) detach();
    });
    req.on("error", (err: Error) => {
      if (settled) return;
      finish();
      if (err instanceof CanceledError || err instanceof TransportFailure) {
        reject(err);
        return;
      }
      const code = (err as NodeJS.ErrnoException).code;
      const reason = oneLine(err.message);
      if (isTls && code !== undefined && TRUST_CODES.test(code)) {
        reject(new TransportFailure("tls-trust", `its TLS certificate is not trusted (${code}: ${reason})`, code, { cause: err }));
      } else if (
        isTls &&
        !secured &&
        (code === "EPROTO" || (code === "ECONNRESET" && init.plainHttpAllowed === true) || code?.startsWith("ERR_SSL_"))
      ) {
        reject(new TransportFailure("tls-protocol", `TLS handshake failed (${code}: ${reason})`, code, { cause: err }));
      } else {
        reject(new TransportFailure("connect", `${code ?? err.name}: ${reason}`, code, { cause: err }));
      }
    });
    init.signal?.addEventListener("abort", onAbort, { once: true });
    arm();
    req.end();
  });
}

/**
 * A transport error's message as one line: OpenSSL's ("write EPROTO 80..:error:0A00010B:SSL routines:
 * ssl3_get_record:wrong version number:../deps/openssl/...:350:\n") reduced to its reason ("wrong version number").
 * Printable only: a certificate error quotes names the server chose.
 */
export function oneLine(message: string): string {
  const openssl = /:error:[0-9A-Fa-f]+:[^:\n]*:[^:\n]*:([^:\n]+)/.exec(message);
  if (openssl) return printable(openssl[1]!);
  return printable(message.split("\n")[0]!);
}

export function seconds(ms: number): string {
  return ms % 1000 === 0 ? String(ms / 1000) : (ms / 1000).toFixed(1);
}

export interface BodyInit {
  /** Exact size the body must have (a descriptor's size). */
  expected?: number;
  /** Most bytes accepted when the size is not known in advance. */
  limit?: number;
  idleTimeoutMs: number;
  signal: AbortSignal | undefined;
  /** "blob sha256:… of x/y" — for messages. */
  what: string;
  /** "registry h:5000" or "h2:9000" — for messages. */
  from: string;
}

/**
 * A response body as a backpressured stream: the socket is read only while the consumer wants data, and the
 * idle timer runs only then, so a slow consumer never looks like a silent registry. Size is checked against
 * `expected`/`limit` as bytes arrive; errors are typed (CanceledError, UnavailableError, DataLossError).
 */
export class ResponseBody extends Readable {
  #res: IncomingMessage;
  #init: BodyInit;
  #received = 0;
  #ended = false;
  #timer: NodeJS.Timeout | undefined;
  #onAbort = () => this.destroy(canceled(this.#init.what, this.#init.signal));

  constructor(res: IncomingMessage, init: BodyInit) {
    super({ highWaterMark: 1 << 20 });
    this.#res = res;
    this.#init = init;
    // The consumer sees every error through its own listener or iterator. This one only keeps an error that comes
    // after the consumer stopped listening (a cancel that lands once it gave up) from crashing the process.
    this.on("error", () => {});
    const length = res.headers["content-length"] === undefined ? undefined : Number(res.headers["content-length"]);
    if (init.signal?.aborted) {
      this.destroy(canceled(init.what, init.signal));
      return;
    }
    if (length !== undefined && init.expected !== undefined && length !== init.expected) {
      this.destroy(new DataLossError(`${init.what} from ${init.from} is ${length} bytes, but its descriptor says ${init.expected}`));
      return;
    }
    if (length !== undefined && init.limit !== undefined && length > init.limit) {
      this.destroy(tooLarge(init));
      return;
    }
    init.signal?.addEventListener("abort", this.#onAbort, { once: true });
    res.on("data", (chunk: Buffer) => this.#data(chunk));
    res.on("end", () => this.#end());
    res.on("error", () => this.#closedEarly());
    res.on("close", () => this.#closedEarly());
    // Nothing is read until the consumer asks.
    res.pause();
  }

  override _read(): void {
    if (this.#ended) return;
    this.#arm();
    this.#res.resume();
  }

  #arm(): void {
    // Restarting the one timer per chunk, rather than making a new one, keeps a fast download cheap.
    if (this.#timer !== undefined) {
      this.#timer.refresh();
      return;
    }
    this.#timer = setTimeout(() => {
      const { what, from, idleTimeoutMs } = this.#init;
      this.destroy(new UnavailableError(`${from} sent nothing for ${seconds(idleTimeoutMs)} s while sending ${what}: check the registry and retry`));
    }, this.#init.idleTimeoutMs);
  }

  #disarm(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #data(chunk: Buffer): void {
    if (this.destroyed) return;
    this.#received += chunk.length;
    const { expected, limit, what, from } = this.#init;
    if (expected !== undefined && this.#received > expected) {
      this.destroy(new DataLossError(`${what} from ${from} is longer than the ${expected} bytes its descriptor says`));
      return;
    }
    if (limit !== undefined && this.#received > limit) {
      this.destroy(tooLarge(this.#init));
      return;
    }
    if (this.push(chunk)) {
      this.#arm();
    } else {
      // The consumer is full: stop reading the socket (TCP pushes back on the registry) and stop the clock.
      this.#disarm();
      this.#res.pause();
    }
  }

  #end(): void {
    if (this.destroyed) return;
    this.#ended = true;
    this.#disarm();
    const { expected, what, from } = this.#init;
    if (expected !== undefined && this.#received < expected) {
      this.destroy(new TruncatedBodyError(`${what} from ${from} was truncated: ${this.#received} of ${expected} bytes`));
      return;
    }
    this.push(null);
  }

  #closedEarly(): void {
    if (this.#ended || this.destroyed) return;
    const { expected, what, from } = this.#init;
    const of = expected === undefined ? "" : ` of ${expected}`;
    this.destroy(new TruncatedBodyError(`${what} from ${from} was truncated: the connection closed after ${this.#received}${of} bytes`));
  }

  override _destroy(err: Error | null, callback: (error?: Error | null) => void): void {
    this.#disarm();
    this.#init.signal?.removeEventListener("abort", this.#onAbort);
    // An unfinished body leaves the connection mid-message: it cannot be reused.
    if (!this.#ended) this.#res.destroy();
    callback(err);
  }
}

function tooLarge(init: BodyInit): FailedPreconditionError {
  return new FailedPreconditionError(`${init.what} from ${init.from} is larger than the ${init.limit} bytes ctrexec reads whole`);
}

/** The whole body, for manifests, configs, tokens and error documents. */
export async function readBody(res: IncomingMessage, init: BodyInit): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of new ResponseBody(res, init)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * Lets a response go: small leftovers are read so the connection can be reused, anything else closes it. A
 * registry that goes silent within the leftovers gets `idleTimeoutMs`, then its connection is closed: it would
 * otherwise stay busy (and keep the process alive) for as long as the registry holds it.
 */
export function discard(res: IncomingMessage, idleTimeoutMs: number): void {
  const length = Number(res.headers["content-length"] ?? Number.NaN);
  // A complete body must still be read: the agent frees the socket only at the response's "end".
  if (!res.complete && !(length >= 0 && length <= 64 * 1024)) {
    res.destroy();
    return;
  }
  if (!res.complete) {
    const timer = setTimeout(() => res.destroy(), idleTimeoutMs).unref();
    const stop = () => clearTimeout(timer);
    res.once("end", stop);
    res.once("close", stop);
  }
  res.resume();
}

/** A client response's status (always set on responses node:http hands to a request's callback). */
export function statusOf(res: IncomingMessage): number {
  return res.statusCode ?? 0;
}

/** A context that trusts nothing: cheap to make (the full CA list costs tens of ms to parse), enough to probe. */
let probeContext: tls.SecureContext | undefined;

/** What a TLS probe learned: "refused" is a connection refused, which says nothing of TLS but that no one listens. */
export type TlsProbe = "tls" | "plain" | "refused" | undefined;

/**
 * Whether `host` speaks TLS, for a registry that may also be reached over plain HTTP (loopback, insecure): a
 * ClientHello with a context that trusts nothing. A certificate error means TLS; a protocol error (an HTTP
 * server answering a ClientHello) means plain HTTP; a refused connection means nothing listens there; anything
 * else (reset, silence for `timeoutMs`, a cancel) tells nothing. No request is sent on this connection, so
 * nothing can be read from an unverified peer.
 */
export function speaksTls(host: string, timeoutMs: number, signal: AbortSignal | undefined): Promise<TlsProbe> {
  const url = new URL(`https://${host}`);
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || 443);
  probeContext ??= tls.createSecureContext({ ca: [] });
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve(undefined);
    const socket = tls.connect({
      host: hostname,
      port,
      secureContext: probeContext,
      ...(isIP(hostname) ? {} : { servername: hostname }),
    });
    const done = (answer: TlsProbe) => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
      socket.destroy();
      resolve(answer);
    };
    const onAbort = () => done(undefined);
    const timer = setTimeout(() => done(undefined), timeoutMs);
    signal?.addEventListener("abort", onAbort, { once: true });
    socket.once("secureConnect", () => done("tls"));
    socket.once("error", (err: NodeJS.ErrnoException) => {
      const code = err.code;
      if (code !== undefined && TRUST_CODES.test(code)) done("tls");
      else if (code === "EPROTO" || code?.startsWith("ERR_SSL_")) done("plain");
      else if (code === "ECONNREFUSED") done("refused");
      else done(undefined);
    });
  });
}
