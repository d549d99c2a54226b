import { CanceledError } from "../index.js";

/** The parts of a terminal's input a prompt uses (process.stdin when it is a TTY; a fake in tests). */
export interface PromptInput extends NodeJS.EventEmitter {
  setRawMode(mode: boolean): unknown;
  setEncoding(encoding: BufferEncoding): unknown;
  resume(): unknown;
  pause(): unknown;
}

/**
 * Reads one line from a terminal in raw mode, so that nothing typed is echoed (a password): Enter ends it,
 * Backspace erases, ^C cancels, ^D on an empty line gives "", ^U erases the line. The terminal is put back as
 * it was on every path.
 */
export function readSecret(input: PromptInput, output: { write(s: string): unknown }, prompt: string): Promise<string> {
  output.write(prompt);
  input.setEncoding("utf8");
  input.setRawMode(true);
  input.resume();
  return new Promise<string>((resolve, reject) => {
    let value = "";
    const done = (err: Error | undefined) => {
      input.off("data", onData);
      input.setRawMode(false);
      input.pause();
      output.write("\n");
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string | Buffer) => {
      for (const ch of String(chunk)) {
        if (ch === "\r" || ch === "\n") return done(undefined);
        if (ch === "\u0003") return done(new CanceledError("canceled at the password prompt"));
        if (ch === "\u0004") {
          if (value === "") return done(undefined);
          continue;
        }
        if (ch === "\u007f" || ch === "\b") value = [...value].slice(0, -1).join("");
        else if (ch === "\u0015") value = "";
        else if (ch >= " ") value += ch;
      }
    };
    input.on("data", onData);
  });
}

/** Reads one line with echo (a user name), from a terminal in its normal mode. */
export function readLine(input: NodeJS.ReadableStream, output: { write(s: string): unknown }, prompt: string): Promise<string> {
  output.write(prompt);
  input.setEncoding("utf8");
  input.resume();
  return new Promise<string>((resolve) => {
    let buf = "";
    const finish = () => {
      input.off("data", onData);
      input.off("end", finish);
      input.pause();
      resolve(buf.replace(/\r?\n$/, ""));
    };
    const onData = (chunk: string | Buffer) => {
      buf += String(chunk);
      if (buf.includes("\n")) {
        buf = buf.slice(0, buf.indexOf("\n") + 1);
        finish();
      }
    };
    input.on("data", onData);
    input.on("end", finish);
  });
}

/** All of a stream (--password-stdin), without the one line ending a shell's `echo` or a file adds. */
export async function readAll(input: AsyncIterable<string | Buffer>): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of input) chunks.push(Buffer.isBuffer(c) ? c : Buffer.from(c));
  return Buffer.concat(chunks)
    .toString("utf8")
    .replace(/\r?\n$/, "");
}
