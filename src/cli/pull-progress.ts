import type { PullProgress } from "../index.js";

/**
 * How a pull's progress is shown: "tty" redraws one line per layer in place (docker's display), "plain" writes
 * one line per blob state change (for logs and pipes, where redrawing would leave escape codes), "quiet" nothing.
 * Pure: it only writes strings to `out`, and takes its clock from the caller, so tests feed it events.
 */
export type ProgressMode = "tty" | "plain" | "quiet";

export interface ProgressOptions {
  mode: ProgressMode;
  /** Terminal width: tty lines are cut to fit, as a wrapped line would break the cursor-up arithmetic. */
  columns?: number;
  /** Terminal height: a redraw never reaches above the screen; layers beyond it are summed up in one line. */
  rows?: number;
  /** Milliseconds, monotonic; for rates and redraw throttling. */
  now?: () => number;
  /** Byte counts alone redraw at most this often (tty); a state change always redraws. */
  redrawIntervalMs?: number;
  /** Written once, before the first line (nothing is written when no event ever comes). */
  header?: string;
}

interface Blob {
  digest: string;
  kind: PullProgress["kind"];
  state: PullProgress["state"];
  current: number;
  total: number | undefined;
  /** Went through unpacking: its "done" is the end ("Pull complete"), not the download's. */
  unpacked: boolean;
  /** When downloading started, and the byte count then (a resumed blob does not count what it had). */
  started?: { at: number; bytes: number };
  /** Set when downloading ended, for the next plain line: bytes and milliseconds. */
  downloaded?: { bytes: number; ms: number } | undefined;
}

const LABELS: Record<PullProgress["state"], string> = {
  resolving: "Resolving",
  waiting: "Waiting",
  downloading: "Downloading",
  verifying: "Verifying Checksum",
  unpacking: "Extracting",
  done: "Done",
  exists: "Already exists",
};

/** docker's short form: the first 12 hex digits (anything that is not a digest is shown whole). */
export function shortDigest(digest: string): string {
  const m = /^[a-z0-9]+:([a-f0-9]{12})[a-f0-9]*$/.exec(digest);
  return m ? m[1]! : digest;
}

/** Decimal units with three significant digits, as docker prints sizes: 512B, 1.5kB, 12.3MB, 999MB, 1GB. */
export function formatBytes(n: number): string {
  const units = ["B", "kB", "MB", "GB", "TB"];
  let v = Math.max(0, n);
  let i = 0;
  while (i < units.length - 1 && v >= 999.5) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? Math.round(v) : Number(v.toPrecision(3))}${units[i]!}`;
}

export function formatRate(bytesPerSecond: number): string {
  return `${formatBytes(bytesPerSecond)}/s`;
}

function label(b: Blob): string {
  if (b.state === "done" && b.kind === "layer") return b.unpacked ? "Pull complete" : "Download complete";
  return LABELS[b.state];
}

/** A line that will not change again: an unpacked layer, or one already present. */
function settled(b: Blob): boolean {
  return (b.state === "done" && b.unpacked) || b.state === "exists";
}

/** A rate needs a moment of data to mean anything; before that none is shown. */
const MIN_RATE_MS = 200;

export class PullProgressView {
  readonly #out: { write(chunk: string): unknown };
  readonly #mode: ProgressMode;
  readonly #columns: number | undefined;
  readonly #rows: number | undefined;
  readonly #now: () => number;
  readonly #interval: number;
  #header: string | undefined;
  readonly #blobs = new Map<string, Blob>();
  /** tty: one line per layer, in order of first appearance. */
  readonly #lines: Blob[] = [];
  /** tty: lines written for good above the redrawn region, and the region's height on screen. */
  #frozen = 0;
  #drawn = 0;
  #lastDraw = Number.NEGATIVE_INFINITY;
  #dirty = false;

  constructor(out: { write(chunk: string): unknown }, options: ProgressOptions) {
    this.#out = out;
    this.#mode = options.mode;
    this.#columns = options.columns;
    this.#rows = options.rows;
    this.#now = options.now ?? (() => performance.now());
    this.#interval = options.redrawIntervalMs ?? 100;
    this.#header = options.header;
  }

  update(event: PullProgress): void {
    if (this.#mode === "quiet") return;
    const now = this.#now();
    if (event.digest === "") {
      // The reference itself, before any blob is known.
      if (this.#mode === "plain") this.#write(`${LABELS[event.state]} ${event.name}\n`);
      return;
    }
    const key = `${event.kind} ${event.digest}`;
    let b = this.#blobs.get(key);
    const isNew = b === undefined;
    if (!b) {
      b = { digest: event.digest, kind: event.kind, state: event.state, current: 0, total: undefined, unpacked: false };
      this.#blobs.set(key, b);
      if (b.kind === "layer") this.#lines.push(b);
    }
    const changed = isNew || b.state !== event.state;
    if (event.total !== undefined) b.total = event.total;
    if (event.state === "downloading" && !b.started) b.started = { at: now, bytes: event.current ?? 0 };
    if (event.current !== undefined) b.current = event.current;
    if (changed && b.state === "downloading" && b.started) b.downloaded = { bytes: b.current - b.started.bytes, ms: now - b.started.at };
    if (event.state === "unpacking") b.unpacked = true;
    b.state = event.state;
    if (this.#mode === "plain") {
      if (changed) this.#write(`${this.#plainLine(b)}\n`);
      return;
    }
    // A line frozen above the region that changes after all comes back at the bottom, so what is shown stays true.
    if (changed && b.kind === "layer" && this.#lines.indexOf(b) < this.#frozen && this.#lines.lastIndexOf(b) < this.#frozen) this.#lines.push(b);
    this.#dirty = true;
    if (changed || now - this.#lastDraw >= this.#interval) this.#draw(now);
  }

  /** Draws the last state (tty); call when the pull settles, before anything else is printed. */
  finish(): void {
    if (this.#mode === "tty" && this.#dirty) this.#draw(this.#now());
  }

  #write(text: string): void {
    if (this.#header !== undefined) {
      const h = this.#header;
      this.#header = undefined;
      this.#out.write(`${h}\n`);
    }
    this.#out.write(text);
  }

  #plainLine(b: Blob): string {
    let detail = "";
    if (b.state === "downloading" && b.total !== undefined) detail = ` ${formatBytes(b.total)}`;
    else if (b.downloaded && b.state !== "downloading") {
      const { bytes, ms } = b.downloaded;
      detail = ` (${formatBytes(bytes)} in ${(ms / 1000).toFixed(1)}s${ms >= MIN_RATE_MS ? `, ${formatRate((bytes * 1000) / ms)}` : ""})`;
      b.downloaded = undefined;
    }
    return `${b.kind} ${shortDigest(b.digest)}: ${label(b)}${detail}`;
  }

  #ttyLine(b: Blob, now: number): string {
    const head = `${shortDigest(b.digest)}: ${label(b)}`;
    if (b.state !== "downloading") return this.#fit(head);
    const elapsed = b.started ? now - b.started.at : 0;
    const rate = b.started && elapsed >= MIN_RATE_MS ? `  ${formatRate(((b.current - b.started.bytes) * 1000) / elapsed)}` : "";
    const bytes = b.total !== undefined ? `${formatBytes(b.current)}/${formatBytes(b.total)}` : formatBytes(b.current);
    const plain = `${head} ${bytes}${rate}`;
    const room = (this.#columns ?? 120) - 1 - plain.length - 3;
    if (b.total === undefined || b.total <= 0 || room < 12) return this.#fit(plain);
    const width = Math.min(50, room);
    const filled = Math.min(width, Math.floor((b.current / b.total) * width));
    const bar = filled >= width ? "=".repeat(width) : `${"=".repeat(filled)}>${" ".repeat(width - filled - 1)}`;
    return this.#fit(`${head} [${bar}] ${bytes}${rate}`);
  }

  #fit(line: string): string {
    const max = this.#columns === undefined ? Number.POSITIVE_INFINITY : Math.max(1, this.#columns - 1);
    return line.length > max ? line.slice(0, max) : line;
  }

  /**
   * Moves the cursor up over the region drawn last and writes every line again, each cleared first. The region
   * must stay within the screen (the cursor cannot move above it): when there are more layers than rows, settled
   * lines at its top are written once more and left above it for good, and what still does not fit is summed up
   * in its last line.
   */
  #draw(now: number): void {
    this.#dirty = false;
    this.#lastDraw = now;
    const max = this.#rows === undefined ? Number.POSITIVE_INFINITY : Math.max(2, this.#rows - 2);
    let out = this.#drawn > 0 ? `\x1b[${this.#drawn}A` : "";
    while (this.#lines.length - this.#frozen > max && settled(this.#lines[this.#frozen]!)) {
      out += `\x1b[2K${this.#ttyLine(this.#lines[this.#frozen]!, now)}\n`;
      this.#frozen++;
      this.#drawn = Math.max(0, this.#drawn - 1);
    }
    const active = this.#lines.slice(this.#frozen);
    const shown = active.length > max ? active.slice(0, max - 1) : active;
    const lines = shown.map((b) => this.#ttyLine(b, now));
    if (active.length > shown.length) {
      const rest = active.slice(shown.length);
      const busy = rest.filter((b) => !settled(b)).length;
      lines.push(this.#fit(`... ${rest.length} more layers (${busy} in progress)`));
    }
    // The region never shrinks on screen: lines left over from a taller one are cleared and stay part of it.
    while (lines.length < this.#drawn) lines.push("");
    for (const l of lines) out += `\x1b[2K${l}\n`;
    this.#drawn = lines.length;
    if (out) this.#write(out);
  }
}

/** The mode for a stream: quiet when asked, tty when it is a terminal, else plain lines. */
export function progressModeFor(stream: { isTTY?: boolean }, quiet: boolean): ProgressMode {
  if (quiet) return "quiet";
  return stream.isTTY ? "tty" : "plain";
}
