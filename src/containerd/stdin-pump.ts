import { closeSync, constants as fsc, openSync } from "node:fs";
import net from "node:net";
import type { Readable } from "node:stream";
import type { Logger } from "../util/logger.js";

/** Copies the caller's stdin into the stdin FIFO; see ProcessIO.closeStdinWhenDone for the EOF protocol. */
export class StdinPump {
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
