import { PassThrough } from "node:stream";
import type { WinSize } from "../index.js";

/**
 * Items pushed until close(), for one consumer to iterate (an object-mode stream buffers them meanwhile). Built on
 * node:stream because the CLI uses only the package's public entry points, not its internal util/channel.ts.
 */
interface Queue<T> {
  push(value: T): void;
  close(): void;
  items: AsyncIterable<T>;
}

function queue<T>(): Queue<T> {
  const stream = new PassThrough({ objectMode: true });
  const open = () => !stream.writableEnded && !stream.destroyed;
  return {
    push: (value) => {
      if (open()) stream.write(value);
    },
    close: () => {
      if (open()) stream.end();
    },
    items: stream,
  };
}

export interface TerminalSession {
  consoleSize: WinSize | undefined;
  resize: AsyncIterable<WinSize> | undefined;
  /** Puts the caller's terminal back as it was. Idempotent; also runs on process exit. */
  restore(): void;
}

/**
 * For `-t`: the caller's terminal in raw mode (keys, ^C included, go to the container's tty), its size now and
 * on every change. Without a terminal on our side (piped), the container still gets a tty, without size.
 */
export function openTerminal(tty: boolean, interactive: boolean): TerminalSession {
  if (!tty) return { consoleSize: undefined, resize: undefined, restore: () => {} };
  const out = process.stdout;
  const size = (): WinSize | undefined => (out.isTTY && out.rows && out.columns ? { rows: out.rows, cols: out.columns } : undefined);
  const resize = queue<WinSize>();
  const onResize = () => {
    const s = size();
    if (s) resize.push(s);
  };
  if (out.isTTY) out.on("resize", onResize);
  const stdin = process.stdin;
  const raw = interactive && stdin.isTTY;
  if (raw) stdin.setRawMode(true);
  let restored = false;
  const restore = () => {
    if (restored) return;
    restored = true;
    out.off("resize", onResize);
    resize.close();
    if (raw && stdin.isTTY) stdin.setRawMode(false);
    process.off("exit", restore);
  };
  process.on("exit", restore);
  return { consoleSize: size(), resize: resize.items, restore };
}

/** Signals ctrexec forwards to the process (docker's sig-proxy); a third SIGINT cancels the run. */
export const FORWARDED_SIGNALS: readonly NodeJS.Signals[] = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2"];

export function forwardSignals(onThirdInterrupt: () => void): { signals: AsyncIterable<NodeJS.Signals>; stop(): void } {
  const ch = queue<NodeJS.Signals>();
  let interrupts = 0;
  const handlers = FORWARDED_SIGNALS.map((sig) => {
    const h = () => {
      if (sig === "SIGINT" && ++interrupts >= 3) onThirdInterrupt();
      else ch.push(sig);
    };
    process.on(sig, h);
    return [sig, h] as const;
  });
  return {
    signals: ch.items,
    stop: () => {
      for (const [sig, h] of handlers) process.off(sig, h);
      ch.close();
    },
  };
}
