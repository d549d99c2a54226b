import { randomBytes } from "node:crypto";
import { closeSync, constants as fsc, openSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import net from "node:net";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";
import { removeDir } from "../fs/remove-dir.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { growPipe, makeFifos } from "./fifo.js";
import { OutputCopy } from "./output-copy.js";
import { StdinPump } from "./stdin-pump.js";

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
        await removeDir(this.dir, fifos).catch((err: unknown) => this.#logger.warn("failed to remove FIFO directory", { dir: this.dir, error: err }));
      }
    })();
    return this.#closing;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}
