import type net from "node:net";
import type { Writable } from "node:stream";
import type { Logger } from "../util/logger.js";
import { noteOutput, outputEnded } from "./heap-trim.js";

/** Read pacing (OutputCopy.#pace): reads shorter than this, in a burst of output this old and this large. */
const PACE_BELOW_BYTES = 64 * 1024;
const PACE_AFTER_MS = 20;
const PACE_AFTER_BYTES = 4 * 1024 * 1024;
/**
 * A burst ends after this long without output. Long enough for a loaded machine's scheduling gaps: a writer
 * descheduled for a few ms at a time must not restart the burst, or it never reaches PACE_AFTER_BYTES and bulk
 * output goes back to many small reads (docs/performance.md).
 */
const PACE_GAP_MS = 50;
/** At 250 MiB/s a 1 ms pause leaves ~256 KiB in the FIFO: one read of ProcessIO's read buffer. */
const PACE_PAUSE_MS = 1;

/**
 * Copies a FIFO to the caller's stream with backpressure (a slow consumer stalls the container, it does not
 * grow our memory). `run()` resolves after EOF once the last chunk was handed to the destination, or after
 * cancel.
 */
export class OutputCopy {
  #sink: Writable | null;
  readonly #name: string;
  readonly #logger: Logger;
  #source: net.Socket | undefined;
  #inflight = 0;
  #ended = false;
  #settle: (() => void) | undefined;
  /** The destination asked us to wait (write() returned false) and has not drained yet. */
  #full = false;
  /** Read pacing: the current burst of output, and the pause that ends a short read. */
  #burstStart = 0;
  #lastRead = 0;
  #burstBytes = 0;
  #pauseTimer: NodeJS.Timeout | undefined;
  readonly #onWritten = () => {
    this.#inflight--;
    this.#maybeDone();
  };
  readonly #onDrain = () => {
    this.#full = false;
    // Restarts reading after a `false` from chunk(), unless a pause is still running (it restarts it then).
    if (!this.#pauseTimer) this.#source?.read(0);
  };
  readonly #onSinkError = (err: unknown) => {
    // The caller's stream broke (e.g. EPIPE): keep draining, or the container would block forever.
    this.#logger.warn(`${this.#name} destination failed; discarding the rest of the output`, { error: err });
    this.#detachSink();
    this.#full = false;
    this.#source?.read(0);
    this.#maybeDone();
  };

  constructor(sink: Writable | null, name: string, logger: Logger) {
    this.#sink = sink;
    this.#name = name;
    this.#logger = logger;
  }

  /** One chunk read from the FIFO; false stops reading until the destination drains or the pause is over. */
  chunk(data: Buffer): boolean {
    noteOutput(data.length);
    const more = this.#pace(data.length);
    if (!this.#sink) return more;
    this.#inflight++;
    if (this.#sink.write(data, this.#onWritten)) return more;
    this.#full = true;
    return false;
  }

  readonly #afterPause = () => {
    this.#pauseTimer = undefined;
    // A full destination restarts reading with its "drain", not the end of a pause.
    if (!this.#ended && !this.#full) this.#source?.read(0);
  };

  /**
   * Bulk output written in small pieces (busybox `head` writes 4 KiB at a time) would otherwise be read as it
   * comes, one small read per wake-up: tens of thousands of reads for 256 MiB, CPU the writer and the shim
   * need on a small machine. Once output has been flowing for a while, a short read pauses reading for a
   * millisecond so that the next read takes what piled up in the 1 MiB FIFO. Output that comes and goes
   * (a build's log lines) is read as it comes, unless 4 MiB of it came without a 50 ms break: then 1 ms late.
   */
  #pace(n: number): boolean {
    const now = performance.now();
    if (now - this.#lastRead > PACE_GAP_MS) {
      this.#burstStart = now;
      this.#burstBytes = 0;
    }
    this.#lastRead = now;
    this.#burstBytes += n;
    if (n >= PACE_BELOW_BYTES || this.#burstBytes < PACE_AFTER_BYTES || now - this.#burstStart < PACE_AFTER_MS) return true;
    this.#pauseTimer ??= setTimeout(this.#afterPause, PACE_PAUSE_MS);
    return false;
  }

  run(source: net.Socket): Promise<void> {
    this.#source = source;
    return new Promise<void>((resolve) => {
      let settled = false;
      this.#settle = () => {
        if (settled) return;
        settled = true;
        clearTimeout(this.#pauseTimer);
        this.#detachSink();
        outputEnded();
        resolve();
      };
      if (this.#sink) {
        this.#sink.on("error", this.#onSinkError);
        this.#sink.on("drain", this.#onDrain);
      }
      source.on("end", () => {
        this.#ended = true;
        this.#maybeDone();
      });
      source.on("close", () => {
        // Closed without EOF means canceled: stop without waiting for the destination.
        this.#ended = true;
        if (!source.readableEnded) this.#settle?.();
        else this.#maybeDone();
      });
      source.on("error", (err) => this.#logger.warn(`reading ${this.#name} failed`, { error: err }));
      // Flowing mode, so that EOF is reported as "end" (the data itself goes through chunk()).
      source.resume();
    });
  }

  #maybeDone(): void {
    if (this.#ended && (this.#inflight === 0 || !this.#sink)) this.#settle?.();
  }

  #detachSink(): void {
    if (!this.#sink) return;
    this.#sink.off("error", this.#onSinkError);
    this.#sink.off("drain", this.#onDrain);
    this.#sink = null;
  }
}
