import { readFileSync } from "node:fs";

/** One line of /proc/<pid>/mountinfo, with its paths decoded (proc_pid_mountinfo(5)). */
export interface MountInfo {
  id: number;
  parent: number;
  /** `major:minor` of the filesystem's device. */
  device: string;
  /** The path within the filesystem that is mounted here (a bind mount's source, relative to its filesystem). */
  root: string;
  mountPoint: string;
  options: string;
  fsType: string;
  source: string;
  superOptions: string;
}

/**
 * The kernel writes the path fields with space, tab, newline and backslash as octal escapes (`\040`, `\011`,
 * `\012`, `\134`; seq_file's mangle_path), so that a path can never split a line or a field. A path compared
 * with a real one must be decoded first: a state dir `/tmp/a b` appears as `/tmp/a\040b`.
 */
export function decodeMountinfoField(field: string): string {
  if (!field.includes("\\")) return field;
  // Escapes stand for single bytes; decoding byte-wise keeps a multi-byte UTF-8 name whole.
  const bytes: number[] = [];
  const raw = Buffer.from(field, "utf8");
  for (let i = 0; i < raw.length; i++) {
    const d = raw.subarray(i + 1, i + 4).toString("latin1");
    if (raw[i] === 0x5c && /^[0-3][0-7]{2}$/.test(d)) {
      bytes.push(parseInt(d, 8));
      i += 3;
    } else bytes.push(raw[i]!);
  }
  return Buffer.from(bytes).toString("utf8");
}

/** Parses mountinfo text; lines that do not have its shape are skipped. */
export function parseMountinfo(text: string): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of text.split("\n")) {
    const f = line.split(" ");
    // Optional fields (shared:N, master:N, ...) run up to a lone "-"; then fstype, source, super options.
    const dash = f.indexOf("-", 6);
    if (dash < 0 || dash + 3 >= f.length) continue;
    out.push({
      id: Number(f[0]),
      parent: Number(f[1]),
      device: f[2]!,
      root: decodeMountinfoField(f[3]!),
      mountPoint: decodeMountinfoField(f[4]!),
      options: f[5]!,
      fsType: decodeMountinfoField(f[dash + 1] ?? ""),
      source: decodeMountinfoField(f[dash + 2] ?? ""),
      superOptions: f[dash + 3] ?? "",
    });
  }
  return out;
}

/** The mounts this process sees. */
export function readMountinfo(path = "/proc/self/mountinfo"): MountInfo[] {
  return parseMountinfo(readFileSync(path, "utf8"));
}

/** Mount points at or below `dir` (a path without a trailing slash), in mountinfo's order. */
export function mountPointsUnder(dir: string, mounts: readonly MountInfo[] = readMountinfo()): string[] {
  return mounts.map((m) => m.mountPoint).filter((m) => m === dir || m.startsWith(`${dir}/`));
}
