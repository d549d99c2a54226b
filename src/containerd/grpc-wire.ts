/**
 * The parts of gRPC's HTTP/2 protocol that are plain data: status codes, message framing, the status a call ends
 * with (from trailers, a trailers-only response, an HTTP status or a stream reset) and the timeout header.
 * https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md
 */

export const Status = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;
export type StatusCode = (typeof Status)[keyof typeof Status];

const statusNames = new Map<number, string>(Object.entries(Status).map(([k, v]) => [v, k]));

/** How a call that did not end with OK ended: the status code and the server's (or our) words. */
export class GrpcStatusError extends Error {
  readonly code: StatusCode;
  readonly details: string;

  constructor(code: StatusCode, details: string, options?: ErrorOptions) {
    super(`${code} ${statusNames.get(code) ?? "UNKNOWN"}: ${details}`, options);
    this.name = "GrpcStatusError";
    this.code = code;
    this.details = details;
  }
}

export function isGrpcStatusError(err: unknown): err is GrpcStatusError {
  return err instanceof GrpcStatusError;
}

/** A length-prefixed message: flag byte 0 (not compressed), 4-byte big-endian length, the bytes. */
export function frame(message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.length);
  out[0] = 0;
  out.writeUInt32BE(message.length, 1);
  out.set(message, 5);
  return out;
}

/** Splits the DATA of a response into messages, however the chunks fall. */
export class FrameDecoder {
  readonly #maxLength: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  /** The length of the message being read, once its prefix is in. */
  #need = -1;

  constructor(maxLength: number) {
    this.#maxLength = maxLength;
  }

  /** The messages completed by this chunk; throws a GrpcStatusError on a frame we cannot accept. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    this.#chunks.push(chunk);
    this.#buffered += chunk.length;
    for (;;) {
      if (this.#need < 0) {
        if (this.#buffered < 5) break;
        const prefix = this.#take(5);
        if (prefix[0] !== 0) {
          // We never send grpc-accept-encoding, so a compressed message is a protocol violation.
          throw new GrpcStatusError(Status.INTERNAL, "the server sent a compressed message without negotiating it");
        }
        this.#need = prefix.readUInt32BE(1);
        if (this.#need > this.#maxLength) {
          throw new GrpcStatusError(
            Status.RESOURCE_EXHAUSTED,
            `received a message of ${this.#need} bytes, larger than the limit of ${this.#maxLength}`,
          );
        }
      }
      if (this.#buffered < this.#need) break;
      out.push(this.#take(this.#need));
      this.#need = -1;
    }
    return out;
  }

  /** True when a message was started and not finished: a response cut short. */
  get partial(): boolean {
    return this.#buffered > 0 || this.#need >= 0;
  }

  #take(n: number): Buffer {
    this.#buffered -= n;
    const first = this.#chunks[0];
    if (first && first.length >= n) {
      // The common case, a message within one chunk: a view, not a copy.
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const all = Buffer.concat(this.#chunks);
    this.#chunks = all.length > n ? [all.subarray(n)] : [];
    return all.subarray(0, n);
  }
}

type Headers = Record<string, string | string[] | undefined>;

function header(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** grpc-message is percent-encoded UTF-8; a malformed escape is kept as it is rather than failing the call. */
export function decodeGrpcMessage(raw: string): string {
  if (!raw.includes("%")) return raw;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw.replace(/(?:%[0-9A-Fa-f]{2})+/g, (run) => {
      try {
        return decodeURIComponent(run);
      } catch {
        return run;
      }
    });
  }
}

/** The status in trailers (or in the headers of a trailers-only response); undefined when there is none. */
export function statusFromMetadata(h: Headers): { code: StatusCode; details: string } | undefined {
  const raw = header(h, "grpc-status");
  if (raw === undefined) return undefined;
  const n = Number(raw);
  const code = (Number.isInteger(n) && statusNames.has(n) ? n : Status.UNKNOWN) as StatusCode;
  return { code, details: decodeGrpcMessage(header(h, "grpc-message") ?? "") };
}

/** A non-200 response that carries no gRPC status (a proxy, or not a gRPC server at all). */
export function statusFromHttp(httpStatus: number): StatusCode {
  switch (httpStatus) {
    case 400:
      return Status.INTERNAL;
    case 401:
      return Status.UNAUTHENTICATED;
    case 403:
      return Status.PERMISSION_DENIED;
    case 404:
      return Status.UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
      return Status.UNAVAILABLE;
    default:
      return Status.UNKNOWN;
  }
}

/** The status of a stream the server reset before sending one (RST_STREAM error codes, RFC 9113 §7). */
export function statusFromReset(rstCode: number): StatusCode {
  switch (rstCode) {
    case 0x7: // REFUSED_STREAM: not processed, safe to say "try again"
      return Status.UNAVAILABLE;
    case 0x8: // CANCEL
      return Status.CANCELLED;
    case 0xb: // ENHANCE_YOUR_CALM
      return Status.RESOURCE_EXHAUSTED;
    case 0xc: // INADEQUATE_SECURITY
      return Status.PERMISSION_DENIED;
    default:
      return Status.INTERNAL;
  }
}

/** The grpc-timeout header: at most eight digits, so long deadlines go in coarser units. */
export function timeoutHeader(ms: number): string {
  const t = Math.max(1, Math.ceil(ms));
  if (t < 1e8) return `${t}m`;
  const s = Math.ceil(t / 1000);
  if (s < 1e8) return `${s}S`;
  return `${Math.min(99_999_999, Math.ceil(s / 3600))}H`;
}
