import type { Readable } from "node:stream";
import { create, toBinary } from "@bufbuild/protobuf";
import {
  AlreadyExistsError,
  CanceledError,
  DataLossError,
  DeadlineExceededError,
  InvalidArgumentError,
  UnavailableError,
  UnknownError,
} from "../errors.js";
import { WriteAction, WriteContentRequestSchema, type WriteContentResponseSchema } from "../gen/content_pb.js";
import type { RequestStream } from "./transport.js";
import type { Init } from "./types.js";

/** A blob's bytes: a Readable, an async generator, or chunks already in memory (a manifest). */
export type ContentSource = AsyncIterable<Uint8Array> | Iterable<Uint8Array> | Readable;

function iterate(source: ContentSource): AsyncIterator<unknown> | Iterator<unknown> {
  const s = source as Partial<AsyncIterable<unknown> & Iterable<unknown>>;
  const asyncIterator = s[Symbol.asyncIterator];
  if (typeof asyncIterator === "function") return asyncIterator.call(s);
  const iterator = s[Symbol.iterator];
  // A lone Buffer is iterable too, by bytes: say what to pass instead.
  if (typeof iterator === "function" && !(source instanceof Uint8Array)) return iterator.call(s);
  throw new InvalidArgumentError("content write: the source must be a Readable or an (async) iterable of byte chunks (wrap a Buffer in [ ])", {
    field: "source",
  });
}

/** Options of `client.content.write`. */
export interface ContentWriteOptions {
  /** Labels the blob gets at commit (e.g. `containerd.io/uncompressed`, `containerd.io/gc.ref.*`). */
  labels?: Record<string, string> | undefined;
  /** Cancels the write; what was written is aborted. */
  signal?: AbortSignal | undefined;
  /** Bytes containerd has written so far, after each of its answers. */
  onProgress?: ((written: number) => void) | undefined;
}

/** What the write needs of the client: the stream, the ingest's cleanup, and how long containerd may stay silent. */
export interface ContentWriteDeps {
  open(signal: AbortSignal): RequestStream<typeof WriteContentRequestSchema, typeof WriteContentResponseSchema>;
  /** Content.Abort on a bounded deadline of its own: it runs after the caller's signal may have fired. */
  abort(ref: string): Promise<void>;
  /** The ingest's offset, to tell a busy writer from a stuck one when the ref is locked. */
  offset(ref: string): Promise<number | undefined>;
  /** How long a request may wait for its answer, and a locked ref for progress. */
  idleMs: number;
}

/** Data goes in messages of this size: small enough for containerd's 16 MiB message limit, large enough that
 *  the per-message cost (a status lookup and an answer each) stays small next to the copy. */
const MESSAGE_BYTES = 1024 * 1024;
/** Requests sent and not yet answered: what the write can hold in buffers on either side, whatever the blob's size. */
const MAX_IN_FLIGHT = 4 * 1024 * 1024;
const DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/;

/**
 * Content.Write of one blob from a stream: STAT (locks the ref; AlreadyExists when the digest is present),
 * WRITEs pipelined up to MAX_IN_FLIGHT unanswered bytes, then COMMIT with the expected size, digest and labels
 * (containerd verifies both). A partial ingest under the same ref is truncated, not resumed: the source is a
 * stream from its first byte, so resuming would only skip bytes it has to produce anyway, and nothing of an
 * earlier attempt is kept that this one did not write. Any failure aborts the ingest.
 */
export async function writeContent(
  deps: ContentWriteDeps,
  ref: string,
  source: ContentSource,
  expected: { digest: string; size: number },
  options: ContentWriteOptions = {},
): Promise<"written" | "exists"> {
  if (typeof ref !== "string" || ref === "") throw new InvalidArgumentError("content write: ref must be a non-empty string", { field: "ref" });
  if (typeof expected?.digest !== "string" || !DIGEST.test(expected.digest)) {
    throw new InvalidArgumentError(`content write: expected.digest ${JSON.stringify(expected?.digest)} is not a digest`, {
      field: "expected.digest",
    });
  }
  if (!Number.isSafeInteger(expected.size) || expected.size < 0) {
    throw new InvalidArgumentError(`content write: expected.size ${String(expected.size)} is not a byte count`, { field: "expected.size" });
  }
  const signal = options.signal;
  if (signal?.aborted) throw new CanceledError(`content write of ${ref} was canceled`, { cause: signal.reason });

  // One controller ends the stream for the caller's signal, a silent containerd, or a failure of the source.
  const control = new AbortController();
  const onAbort = () => control.abort(signal?.reason);
  signal?.addEventListener("abort", onAbort, { once: true });
  let started = false;
  try {
    const attempt = await openLocked(deps, ref, expected, control.signal, signal, options.onProgress);
    if (attempt === "exists") return "exists";
    started = true;
    return await send(deps, attempt, ref, source, expected, options.labels, control);
  } catch (err) {
    if (err instanceof AlreadyExistsError) {
      // Someone committed the same digest first (containerd checks at STAT and at COMMIT).
      if (started) await deps.abort(ref).catch(() => {});
      return "exists";
    }
    if (!control.signal.aborted) control.abort();
    await abortIngest(deps, ref, expected);
    if (signal?.aborted && !(err instanceof CanceledError)) {
      throw new CanceledError(`content write of ${ref} was canceled`, { cause: signal.reason });
    }
    throw err;
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/**
 * Aborts `ref`'s ingest once no Write stream holds it. A stream just canceled may still be running in containerd
 * (its handler ends a moment after our reset), and one whose first request was on its way creates the ingest
 * when it gets there: an Abort before that finds nothing, and the ingest it then makes stays for good. So the
 * ref is taken first, by a Write of our own (which waits while the other holds it, as openLocked does), and
 * aborted while we hold it; then that stream ends. Bounded by the idle time; a plain Abort if that fails.
 */
async function abortIngest(deps: ContentWriteDeps, ref: string, expected: { digest: string; size: number }): Promise<void> {
  const control = new AbortController();
  const timer = setTimeout(() => control.abort(), deps.idleMs);
  let held: Writer | "exists" | undefined;
  try {
    held = await openLocked(deps, ref, expected, control.signal, control.signal, undefined);
  } catch {
    // containerd away, or the ref held past the bound: the plain Abort below is all there is to do.
  } finally {
    clearTimeout(timer);
  }
  await deps.abort(ref).catch(() => {});
  if (held && held !== "exists") {
    held.stream.cancel();
    await held.done.catch(() => {});
  }
}

type Writer = {
  stream: RequestStream<typeof WriteContentRequestSchema, typeof WriteContentResponseSchema>;
  /** Containerd's offset in its latest answer, and how many answers came. */
  readonly written: number;
  readonly answers: number;
  /** Resolves at the next answer (or the end of the call). */
  changed(): Promise<void>;
  /** The call's error once it failed; `ended` once its responses are over, OK or not. */
  readonly failure: unknown;
  readonly ended: boolean;
  /** Settles when the response stream ends: OK or the call's error. */
  done: Promise<void>;
};

/** Opens the stream and sends STAT; a ref locked by another writer is waited for while that writer makes progress. */
async function openLocked(
  deps: ContentWriteDeps,
  ref: string,
  expected: { digest: string; size: number },
  control: AbortSignal,
  signal: AbortSignal | undefined,
  onProgress: ((written: number) => void) | undefined,
): Promise<Writer | "exists"> {
  let delay = 10;
  let lastOffset: number | undefined;
  let lastProgress = Date.now();
  for (;;) {
    const writer = reader(deps.open(control), onProgress);
    try {
      await writer.stream.send({ action: WriteAction.STAT, ref, total: BigInt(expected.size), expected: expected.digest });
      await answered(writer, 1);
      return writer;
    } catch (err) {
      writer.stream.cancel();
      await writer.done.catch(() => {});
      if (err instanceof AlreadyExistsError) return "exists";
      if (!(err instanceof UnavailableError && /\blocked\b/.test(err.message))) throw err;
      // containerd holds the ref for another Write stream until it ends (a concurrent pull of the same blob).
      const offset = await deps.offset(ref).catch(() => undefined);
      if (offset !== lastOffset) {
        lastOffset = offset;
        lastProgress = Date.now();
      } else if (Date.now() - lastProgress > deps.idleMs) {
        throw new UnavailableError(`content ingest ${ref} is locked by another writer that made no progress for ${deps.idleMs} ms`, {
          cause: err,
        });
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 1000);
    }
  }
}

/** Reads the answers as they come, so that containerd never waits for us to read before it takes more data. */
function reader(
  stream: RequestStream<typeof WriteContentRequestSchema, typeof WriteContentResponseSchema>,
  onProgress: ((written: number) => void) | undefined,
): Writer {
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const writer = {
    stream,
    written: 0,
    answers: 0,
    failure: undefined as unknown,
    ended: false,
    changed: () => new Promise<void>((resolve) => (wake = resolve)),
    done: Promise.resolve(),
  };
  writer.done = (async () => {
    try {
      for await (const r of stream.responses()) {
        writer.answers++;
        // STAT's answer is the offset of whatever ingest is there, which the first WRITE truncates.
        if (writer.answers > 1) {
          writer.written = Number(r.offset);
          onProgress?.(writer.written);
        }
        notify();
      }
    } catch (err) {
      writer.failure = err;
      throw err;
    } finally {
      writer.ended = true;
      notify();
    }
  })();
  writer.done.catch(() => {});
  return writer;
}

/** Waits for `answers` answers; the call's error if it fails first. */
async function answered(w: Writer, answers: number): Promise<void> {
  while (w.answers < answers) {
    if (w.failure) throw w.failure;
    if (w.ended) throw new UnknownError("containerd ended Content.Write without answering every request");
    await w.changed();
  }
}

/** A WriteContentRequest as parts: its fields but data encoded by protobuf, then data's tag and length, then the chunks themselves. */
function encodeRequest(fields: Init<typeof WriteContentRequestSchema>, data: readonly Buffer[], size: number): Uint8Array[] {
  const head = toBinary(WriteContentRequestSchema, create(WriteContentRequestSchema, fields));
  if (size === 0) return [head];
  // Field 6 (data), wire type 2 (length-delimited): tag byte 0x32, then the length as a varint.
  const tag: number[] = [0x32];
  for (let n = size; ; n = Math.floor(n / 128)) {
    if (n < 128) {
      tag.push(n);
      break;
    }
    tag.push((n % 128) | 0x80);
  }
  return [head, Uint8Array.from(tag), ...data];
}

async function send(
  deps: ContentWriteDeps,
  w: Writer,
  ref: string,
  source: ContentSource,
  expected: { digest: string; size: number },
  labels: Record<string, string> | undefined,
  control: AbortController,
): Promise<"written"> {
  let sent = 0; // bytes of data sent
  let requests = 1; // requests sent (STAT was)
  let watchdog: NodeJS.Timeout | undefined;
  let silent = false;
  // containerd answers each request; while some wait for theirs, it must not stay silent for long.
  // The watchdog looks again after idleMs: answers that came meanwhile (while the source kept us busy) restart it.
  let seen = w.answers;
  const arm = () => {
    watchdog = undefined;
    if (w.answers >= requests || w.ended) return;
    seen = w.answers;
    watchdog = setTimeout(() => {
      watchdog = undefined;
      if (w.answers !== seen || w.answers >= requests || w.ended) return arm();
      silent = true;
      control.abort(new DeadlineExceededError(`containerd did not answer Content.Write of ${ref} within ${deps.idleMs} ms`));
    }, deps.idleMs);
  };
  const watch = () => {
    if (!watchdog) arm();
  };
  const stalled = (err: unknown) =>
    silent ? new DeadlineExceededError(`containerd did not answer Content.Write of ${ref} within ${deps.idleMs} ms`, { cause: err }) : err;

  const pending: Buffer[] = [];
  let pendingBytes = 0;
  const flush = async (fields: Init<typeof WriteContentRequestSchema>) => {
    const parts = encodeRequest({ ...fields, offset: BigInt(sent) }, pending, pendingBytes);
    sent += pendingBytes;
    pending.length = 0;
    pendingBytes = 0;
    requests++;
    watch();
    await w.stream.sendEncoded(parts);
    // Bounded bytes in flight: what containerd has not yet answered for, whatever the blob's size.
    while (sent - w.written > MAX_IN_FLIGHT && !w.ended) {
      await w.changed();
      watch();
    }
    if (w.failure) throw w.failure;
  };

  try {
    const iterator = iterate(source);
    let finished = false;
    try {
      for (;;) {
        const step = await nextOrAbort(iterator, control.signal);
        watch();
        if (step.done) {
          finished = true;
          break;
        }
        const chunk = step.value;
        if (!(chunk instanceof Uint8Array)) {
          throw new InvalidArgumentError("content write: the source must yield bytes (Uint8Array/Buffer)", { field: "source" });
        }
        if (chunk.byteLength === 0) continue;
        if (sent + pendingBytes + chunk.byteLength > expected.size) {
          throw new DataLossError(`content ${expected.digest}: the source gave more than the ${expected.size} bytes expected`);
        }
        pending.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
        pendingBytes += chunk.byteLength;
        // The first WRITE is at offset 0, which makes containerd truncate a partial ingest under this ref.
        if (pendingBytes >= MESSAGE_BYTES) await flush({ action: WriteAction.WRITE });
      }
    } finally {
      // A source we stop reading early is told so (a Readable is destroyed); not awaited: it may hang on its network.
      if (!finished) void Promise.resolve(iterator.return?.()).catch(() => {});
    }
    if (sent + pendingBytes !== expected.size) {
      throw new DataLossError(`content ${expected.digest}: the source ended after ${sent + pendingBytes} of ${expected.size} bytes`);
    }
    await flush({ action: WriteAction.COMMIT, total: BigInt(expected.size), expected: expected.digest, labels: labels ?? {} });
    w.stream.end();
    await answered(w, requests);
    await w.done;
    return "written";
  } catch (err) {
    w.stream.cancel();
    await w.done.catch(() => {});
    throw stalled(err);
  } finally {
    if (watchdog) clearTimeout(watchdog);
  }
}

/**
 * The source's next chunk, or the abort: the source may wait on a network, and the caller's signal must end the
 * write even then. (Not Promise.race against one long-lived promise: each race would stay subscribed to it and
 * keep its chunk alive until the write ends.)
 */
function nextOrAbort(iterator: AsyncIterator<unknown> | Iterator<unknown>, signal: AbortSignal): Promise<IteratorResult<unknown>> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) return reject(signal.reason);
    const onAbort = () => reject(signal.reason);
    signal.addEventListener("abort", onAbort, { once: true });
    Promise.resolve(iterator.next()).then(
      (step) => {
        signal.removeEventListener("abort", onAbort);
        resolve(step);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err);
      },
    );
  });
}

function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(new CanceledError("content write was canceled", { cause: signal.reason }));
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(new CanceledError("content write was canceled", { cause: signal?.reason }));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}
