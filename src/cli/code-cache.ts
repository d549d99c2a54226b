/**
 * The CLI as a CommonJS bundle compiled with a V8 code cache (Node 20 has no module compile cache). The build
 * writes the bundle (ctrexec.cjs), runs it once in a fresh process and saves what V8 compiled on the way
 * (ctrexec.cjs.cache); every invocation then deserializes that instead of parsing and compiling the bundle.
 *
 * The cache file is one header line and V8's data:
 *   `ctrexec-code-cache 1 <sha256 of the bundle's bytes> <sha256 of V8's data>\n<V8's data>`
 * V8 checks its own version and flags, but not the source (only its length) nor, in release builds, its data:
 * a corrupt cache crashes the process. So the cache is used only when both digests match; otherwise the bundle
 * is compiled from its source, as when there is no cache, and runs the same.
 */
import { createHash } from "node:crypto";
import { readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname } from "node:path";
import { Script } from "node:vm";

const MAGIC = "ctrexec-code-cache 1";

/** What became of the cache: used, absent, for another bundle or damaged, or refused by V8 (another Node). */
export type CodeCacheStatus = "accepted" | "missing" | "stale" | "corrupt" | "rejected";

export interface LoadedBundle {
  /** The bundle's `module.exports`. */
  exports: Record<string, unknown>;
  cache: CodeCacheStatus;
}

function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** The bundle's text, decoded the same way when the cache is made and when it is used. */
function sourceOf(bytes: Buffer): string {
  return bytes.toString("utf8");
}

/** CommonJS's wrapper, on the bundle's first line so that its line numbers stay those of the file. */
function compile(file: string, bytes: Buffer, cachedData?: Buffer): Script {
  const code = `(function (exports, require, module, __filename, __dirname) {${sourceOf(bytes)}\n})`;
  return new Script(code, cachedData ? { filename: file, cachedData } : { filename: file });
}

function run(script: Script, file: string): Record<string, unknown> {
  const module = { exports: {} as Record<string, unknown> };
  const wrapper = script.runInThisContext() as (e: unknown, r: NodeJS.Require, m: unknown, f: string, d: string) => void;
  wrapper(module.exports, createRequire(file), module, file, dirname(file));
  return module.exports;
}

/** V8's data from `cacheFile` when it was made for exactly `bundle` and is intact; else why not. */
function readCache(cacheFile: string, bundle: Buffer): Buffer | Exclude<CodeCacheStatus, "accepted" | "rejected"> {
  let raw: Buffer;
  try {
    raw = readFileSync(cacheFile);
  } catch {
    return "missing";
  }
  const eol = raw.indexOf(10);
  const header = (eol < 0 ? "" : raw.toString("latin1", 0, eol)).split(" ");
  if (header.length !== 4 || `${header[0]} ${header[1]}` !== MAGIC) return "corrupt";
  if (header[2] !== sha256(bundle)) return "stale";
  const data = raw.subarray(eol + 1);
  return header[3] === sha256(data) ? data : "corrupt";
}

/** Runs the CommonJS bundle `file` (its top level), with the code cache `cacheFile` when it is valid for it. */
export function loadBundle(file: string, cacheFile: string): LoadedBundle {
  const bytes = readFileSync(file);
  const cached = readCache(cacheFile, bytes);
  if (typeof cached === "string") return { exports: run(compile(file, bytes), file), cache: cached };
  const script = compile(file, bytes, cached);
  // Rejected (another V8 version or other flags): V8 compiled the source instead.
  const cache: CodeCacheStatus = script.cachedDataRejected === true ? "rejected" : "accepted";
  return { exports: run(script, file), cache };
}

/**
 * Makes `cacheFile` for the bundle `file`: compiles and runs it, lets `warmUp` exercise its exports (what it calls
 * is compiled now and saved with the rest), then writes the cache beside it in one rename, so that a reader sees
 * the old file or the new one. Call it in a fresh process with the flags the CLI runs with, or V8 refuses the cache.
 */
export async function writeCodeCache(file: string, cacheFile: string, warmUp: (exports: Record<string, unknown>) => Promise<void>): Promise<void> {
  const bytes = readFileSync(file);
  const script = compile(file, bytes);
  await warmUp(run(script, file));
  const data = script.createCachedData();
  const tmp = `${cacheFile}.${process.pid}.tmp`;
  try {
    writeFileSync(tmp, Buffer.concat([Buffer.from(`${MAGIC} ${sha256(bytes)} ${sha256(data)}\n`, "latin1"), data]));
    renameSync(tmp, cacheFile);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}
