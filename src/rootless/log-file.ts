import { closeSync, fstatSync, openSync, readSync, renameSync, statSync, writeSync } from "node:fs";

/** Past this size a start moves the log to `<log>.1` (replacing the one before): the log never grows unbounded. */
const ROTATE_BYTES = 1 << 20;
/** How much of the log's end is read for an error's tail: enough for ~20 lines of containerd or rootlesskit. */
const TAIL_BYTES = 16 << 10;

export interface OpenedLog {
  fd: number;
  /** Where this start's output begins: the tail shown on failure is from this start only. */
  offset: number;
}

/** Opens the daemon's log for appending (0600: it can show paths and ids), after a header line for this start. */
export function openDaemonLog(path: string, header: string): OpenedLog {
  try {
    if (statSync(path).size > ROTATE_BYTES) renameSync(path, `${path}.1`);
  } catch {}
  const fd = openSync(path, "a", 0o600);
  writeSync(fd, `--- ${header}\n`);
  return { fd, offset: fstatSync(fd).size };
}

/** The last `lines` lines the log got since `offset`; "" when it cannot be read. */
export function logTail(path: string, offset: number, lines = 20): string {
  let fd: number | undefined;
  try {
    fd = openSync(path, "r");
    const size = fstatSync(fd).size;
    const from = Math.max(offset, size - TAIL_BYTES);
    const buf = Buffer.alloc(Math.max(0, size - from));
    readSync(fd, buf, 0, buf.length, from);
    return buf.toString("utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}
