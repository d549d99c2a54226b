import { constants as fsc, openSync, closeSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { type Logger, silentLogger } from "../util/logger.js";
import { growPipe, makeFifos } from "./fifo.js";

/** FIFO buffer for output: 1 MiB, the kernel's default pipe-max-size. */
const OUTPUT_PIPE_BYTES = 1 << 20;

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
  static async create(options: ProcessIOOptions): Promise<ProcessIO> {
    const logger = options.logger ?? silentLogger;
    const terminal = options.terminal ?? false;
    const { stdin, stdout, stderr } = options;
    if (!stdin && !stdout && !stderr && !terminal) {
      // No FIFOs at all: the shim connects the process to /dev/null. Cheapest, and nothing can block.
      return new ProcessIO("", { stdin: "", stdout: "", stderr: "", terminal: false }, logger);
    }
    await mkdir(options.fifoRoot, { recursive: true, mode: 0o700 });
    const dir = await mkdtemp(join(options.fifoRoot, `${options.id}-`));
    const config: IOConfig = {
      stdin: stdin ? join(dir, "stdin") : "",
      stdout: join(dir, "stdout"),
      stderr: terminal ? "" : join(dir, "stderr"),
      terminal,
    };
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
    let socket: net.Socket;
    try {
      socket = new net.Socket({ fd, readable: true, writable: false });
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    this.#sockets.push(socket);
    this.#outputs.push(copyOutput(socket, dest, name, this.#logger));
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
        await rm(this.dir, { recursive: true, force: true }).catch((err: unknown) =>
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

/**
 * Copies a FIFO to the caller's stream with backpressure (a slow consumer stalls the container, it does not
 * grow our memory). Resolves after EOF once the last chunk was handed to the destination, or after cancel.
 */
function copyOutput(source: net.Socket, dest: Writable | null, name: string, logger: Logger): Promise<void> {
  return new Promise<void>((resolve) => {
    let sink: Writable | null = dest;
    let inflight = 0;
    let ended = false;
    let settled = false;
    const detachSink = () => {
      if (!sink) return;
      sink.off("error", onSinkError);
      sink.off("drain", onDrain);
      sink = null;
    };
    const settle = () => {
      if (settled) return;
      settled = true;
      detachSink();
      resolve();
    };
    const maybeDone = () => {
      if (ended && (inflight === 0 || !sink)) settle();
    };
    const onWritten = () => {
      inflight--;
      maybeDone();
    };
    const onSinkError = (err: unknown) => {
      // The caller's stream broke (e.g. EPIPE): keep draining, or the container would block forever.
      logger.warn(`${name} destination failed; discarding the rest of the output`, { error: err });
      detachSink();
      source.resume();
      maybeDone();
    };
    const onDrain = () => source.resume();
    if (sink) {
      sink.on("error", onSinkError);
      sink.on("drain", onDrain);
    }
    source.on("data", (chunk: Buffer) => {
      if (!sink) return;
      inflight++;
      if (!sink.write(chunk, onWritten)) source.pause();
    });
    source.on("end", () => {
      ended = true;
      maybeDone();
    });
    source.on("close", () => {
      // Closed without EOF means canceled: stop without waiting for the destination.
      ended = true;
      if (!source.readableEnded) settle();
      else maybeDone();
    });
    source.on("error", (err) => logger.warn(`reading ${name} failed`, { error: err }));
  });
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
