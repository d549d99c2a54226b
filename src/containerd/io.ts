import { constants as fsc, openSync, closeSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { type Logger, silentLogger } from "../util/logger.js";
import { growPipe, makeFifos } from "./fifo.js";
import { removeDir } from "../fs/remove-dir.js";
import { noteOutput, outputEnded } from "./heap-trim.js";

/** FIFO buffer for output: 1 MiB, the kernel's default pipe-max-size. */
const OUTPUT_PIPE_BYTES = 1 << 20;

/**
 * Every output FIFO is read into this one buffer and each chunk copied out at once (exactly its size), instead
 * of libuv's fresh 64 KiB allocation per read: bulk output then makes no garbage beyond the chunks themselves,
 * which keeps glibc's heap (RSS) from growing by tens of MB after a few hundred MB of output. Sharing is safe:
 * the read callback copies synchronously before any other read can land.
 */
const READ_BUFFER = Buffer.allocUnsafe(256 * 1024);

/**
 * Process IO over FIFOs, like containerd's `cio`: a FIFO set per process in a private directory, copied to and
 * from the caller's Node streams.
 *
 * Rules learnt the hard way (docs/architecture.md, "Process IO"):
 * - No FIFO is ever opened blocking: a blocking open parks a libuv threadpool thread until the other side shows
 *   up. Read ends are opened O_RDONLY|O_NONBLOCK and polled by libuv through a net.Socket (epoll, no threads).
 * - The stdout/stderr read ends are open before Tasks.Create / exec Start, because the shim opens its write
 *   ends blocking and would hang there.
 * - Without a TTY containerd wants stdout and stderr both or neither; a missing caller stream is drained,
 *   never left unread (an unread FIFO blocks the container once the pipe buffer is full).
 * - The stdin FIFO is opened O_RDWR (never blocks, never ENXIO) and kept open until the task side has opened
 *   its reader, or a short stdin written early would vanish with the last open fd.
 * - Closing our stdin fd is not EOF for the process: the shim keeps its own writer. `CloseIO` is called only
 *   after the caller's stdin reached EOF and every byte was written (BuildKit closes too early, §12.7).
 */

export interface ProcessStreams {
  stdin?: Readable | null | undefined;
  stdout?: Writable | null | undefined;
  stderr?: Writable | null | undefined;
  /** A pseudo-terminal: stdin and stdout only, the pty merges stderr into stdout. */
  terminal?: boolean | undefined;
}

export interface ProcessIOOptions extends ProcessStreams {
  /** Directory holding one private (0700) FIFO directory per process. */
  fifoRoot: string;
  /** Names the FIFO directory, for humans and for reconciling leftovers. */
  id: string;
  logger?: Logger | undefined;
  /** Test hook: force the FIFO implementation. */
  fifoImplementation?: "native" | "spawn" | undefined;
  /** The directory and paths chosen beforehand with `ProcessIO.plan` (the directory must not exist yet). */
  planned?: PlannedIO | undefined;
}

/** Where a process's FIFOs will be, decided before they exist. */
export interface PlannedIO {
  dir: string;
  config: IOConfig;
}

/** The FIFO paths to put in Tasks.Create / Tasks.Exec; "" where there is none. */
export interface IOConfig {
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
}

export class ProcessIO {
  readonly config: IOConfig;
  /** The private FIFO directory, or "" when the process has no IO at all. */
  readonly dir: string;
  readonly #logger: Logger;
  readonly #outputs: Promise<void>[] = [];
  readonly #sockets: net.Socket[] = [];
  #stdinPump: StdinPump | undefined;
  #canceled = false;
  #closing: Promise<void> | undefined;

  private constructor(dir: string, config: IOConfig, logger: Logger) {
    this.dir = dir;
    this.config = config;
    this.#logger = logger;
  }

  /**
   * Creates the FIFO set and starts copying. Call before Tasks.Create (init) or Tasks.Exec (exec), and
   * `close()` after Tasks.Delete / DeleteProcess, also on every failure path.
   */
  /**
   * Chooses the FIFO directory and paths without creating anything, for a caller that sends them to containerd
   * while `create` makes them: an exec's shim opens its FIFOs at Start, not at Exec.
   */
  static plan(options: Pick<ProcessIOOptions, "fifoRoot" | "id" | "stdin" | "stdout" | "stderr" | "terminal">): PlannedIO {
    const terminal = options.terminal ?? false;
    if (!options.stdin && !options.stdout && !options.stderr && !terminal) {
      // No FIFOs at all: the shim connects the process to /dev/null. Cheapest, and nothing can block.
      return { dir: "", config: { stdin: "", stdout: "", stderr: "", terminal: false } };
    }
    const dir = join(options.fifoRoot, `${options.id}-${randomBytes(6).toString("hex")}`);
    return {
      dir,
      config: {
        stdin: options.stdin ? join(dir, "stdin") : "",
        stdout: join(dir, "stdout"),
        stderr: terminal ? "" : join(dir, "stderr"),
        terminal,
      },
    };
  }

  static async create(options: ProcessIOOptions): Promise<ProcessIO> {
    const logger = options.logger ?? silentLogger;
    const { stdin, stdout, stderr } = options;
    const { dir, config } = options.planned ?? ProcessIO.plan(options);
    if (!dir) return new ProcessIO("", config, logger);
    // Not recursive: an existing directory is an error (the name has 48 random bits). The FIFO root is made
    // only the first time (or after someone removed it), not with a second syscall per process.
    await mkdir(dir, { mode: 0o700 }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== "ENOENT") throw err;
      await mkdir(options.fifoRoot, { recursive: true, mode: 0o700 });
      await mkdir(dir, { mode: 0o700 });
    });
    const io = new ProcessIO(dir, config, logger);
    try {
      await makeFifos(
        [config.stdin, config.stdout, config.stderr].filter((p) => p !== ""),
        options.fifoImplementation ? { implementation: options.fifoImplementation } : {},
      );
      io.#startOutput(config.stdout, stdout ?? null, "stdout");
      if (config.stderr) io.#startOutput(config.stderr, stderr ?? null, "stderr");
      if (stdin) io.#stdinPump = new StdinPump(config.stdin, stdin, logger);
    } catch (err) {
      await io.close();
      throw err;
    }
    return io;
  }

  #startOutput(path: string, dest: Writable | null, name: string): void {
    const fd = openSync(path, fsc.O_RDONLY | fsc.O_NONBLOCK);
    growPipe(fd, OUTPUT_PIPE_BYTES);
    const copy = new OutputCopy(dest, name, this.#logger);
    let socket: net.Socket;
    try {
      // Node's Socket constructor takes `onread` (net.connect passes it through); its types list it only there.
      const options: net.SocketConstructorOpts & { onread: net.OnReadOpts } = {
        fd,
        readable: true,
        writable: false,
        onread: { buffer: READ_BUFFER, callback: (n, buf) => copy.chunk(Buffer.from(buf.subarray(0, n))) },
      };
      socket = new net.Socket(options);
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#sockets.push(socket);
    this.#outputs.push(copy.run(socket));
  }

  /**
   * Arms stdin: once the caller's stdin has ended and every byte is in the FIFO, our end is closed and
   * `closeIO` (the Tasks.CloseIO RPC) runs, which gives the process its EOF. Call right after Tasks.Create for
   * an init process, after Tasks.Start for an exec. Without a stdin stream it does nothing.
   */
  closeStdinWhenDone(closeIO: () => Promise<void>): void {
    this.#stdinPump?.arm(closeIO);
  }

  /** Resolves when every output stream reached EOF and was handed to its destination. Never rejects. */
  async wait(): Promise<void> {
    await Promise.all(this.#outputs);
  }

  /** Stops all copying now (after a kill, or when the task never started); `wait()` then resolves. */
  cancel(): void {
    if (this.#canceled) return;
    this.#canceled = true;
    this.#stdinPump?.cancel();
    for (const s of this.#sockets) s.destroy();
  }

  /** Cancels and removes the FIFO directory. Idempotent; never rejects. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.cancel();
      await this.wait();
      if (this.dir) {
        const fifos = [this.config.stdin, this.config.stdout, this.config.stderr].filter((f) => f !== "");
        await removeDir(this.dir, fifos).catch((err: unknown) =>
          this.#logger.warn("failed to remove FIFO directory", { dir: this.dir, error: err }),
        );
      }
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** Read pacing (OutputCopy.#pace): reads shorter than this, in a burst of output this old and this large. */
const PACE_BELOW_BYTES = 64 * 1024;
const PACE_AFTER_MS = 20;
const PACE_AFTER_BYTES = 4 * 1024 * 1024;
/**
 * A burst ends after this long without output. Long enough for a loaded machine's scheduling gaps: with 5 ms,
 * a writer descheduled for a few ms at a time (two busy loops on 2 cores) restarted the burst so often that it
 * never reached PACE_AFTER_BYTES, and 64 MiB took up to 4,400 reads instead of ~300.
 */
const PACE_GAP_MS = 50;
/** At 250 MiB/s a 1 ms pause leaves ~256 KiB in the FIFO: one read of READ_BUFFER's size. */
const PACE_PAUSE_MS = 1;

/**
 * Copies a FIFO to the caller's stream with backpressure (a slow consumer stalls the container, it does not
 * grow our memory). `run()` resolves after EOF once the last chunk was handed to the destination, or after
 * cancel.
 */
class OutputCopy {
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

/** Copies the caller's stdin into the stdin FIFO; see ProcessIO.closeStdinWhenDone for the EOF protocol. */
class StdinPump {
  readonly #socket: net.Socket;
  readonly #source: Readable;
  readonly #logger: Logger;
  #inflight = 0;
  #sourceDone = false;
  #closeIO: (() => Promise<void>) | undefined;
  #finished = false;
  readonly #onData = (chunk: Buffer | string) => {
    this.#inflight++;
    if (!this.#socket.write(chunk, this.#onWritten)) this.#source.pause();
  };
  readonly #onWritten = (err?: Error | null) => {
    this.#inflight--;
    if (err) this.#logger.debug("stdin write failed", { error: err });
    this.#maybeFinish();
  };
  readonly #onEnd = () => {
    this.#sourceDone = true;
    this.#maybeFinish();
  };
  readonly #onError = (err: unknown) => {
    // A broken stdin is the end of stdin: close it so the process does not wait forever.
    this.#logger.warn("reading stdin failed; closing the process's stdin", { error: err });
    this.#onEnd();
  };
  readonly #onDrain = () => this.#source.resume();

  constructor(path: string, source: Readable, logger: Logger) {
    const fd = openSync(path, fsc.O_RDWR | fsc.O_NONBLOCK);
    try {
      this.#socket = new net.Socket({ fd, readable: false, writable: true });
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#socket.on("error", (err) => logger.debug("stdin FIFO error", { error: err }));
    this.#socket.on("drain", this.#onDrain);
    this.#source = source;
    this.#logger = logger;
    source.on("data", this.#onData);
    source.on("end", this.#onEnd);
    source.on("error", this.#onError);
    if (source.readableEnded) this.#sourceDone = true;
  }

  arm(closeIO: () => Promise<void>): void {
    this.#closeIO = closeIO;
    this.#maybeFinish();
  }

  #maybeFinish(): void {
    if (this.#finished || !this.#sourceDone || this.#inflight > 0 || !this.#closeIO) return;
    this.#finished = true;
    this.#detach();
    this.#socket.destroy();
    this.#closeIO().catch((err: unknown) => this.#logger.debug("CloseIO failed", { error: err }));
  }

  #detach(): void {
    this.#source.off("data", this.#onData);
    this.#source.off("end", this.#onEnd);
    this.#source.off("error", this.#onError);
  }

  cancel(): void {
    if (this.#finished) return;
    this.#finished = true;
    this.#detach();
    // Leave the caller's stream as we found it: paused, not consumed further by us.
    this.#source.pause();
    this.#socket.destroy();
  }
}
