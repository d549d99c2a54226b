import { readFile } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { type HostIP, InvalidArgumentError, type ProcessMeta, type Ulimit } from "../index.js";
import { parseIdMapFlag, ULIMIT_NAMES } from "../oci/index.js";

/** Errors that name the flag, e.g. `invalid argument "x" for "--memory": ...` (docker's wording). */
export function flagError(flag: string, value: string, why: string): InvalidArgumentError {
  return new InvalidArgumentError(`invalid argument ${JSON.stringify(value)} for "${flag}": ${why}`, { field: flag });
}

/** A byte size with docker's binary units: 512, 64k, 64m, 1g (also kb/mb/gb, any case). */
export function parseSize(flag: string, value: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmgt]?)b?$/i.exec(value.trim());
  if (!m) throw flagError(flag, value, "expected a size like 512, 64k, 64m or 1g");
  const unit = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2]!.toLowerCase()]!;
  const bytes = Math.floor(Number(m[1]) * unit);
  if (bytes <= 0 || !Number.isSafeInteger(bytes)) throw flagError(flag, value, "must be a positive size");
  return bytes;
}

export type MountFlag =
  /** `idmap` (podman's option) is present only when asked for. */
  | { type: "bind"; source: string; target: string; readonly: boolean; idmap?: true }
  | { type: "tmpfs"; target: string; readonly: boolean; size?: number };

function parseBool(flag: string, key: string, v: string | undefined): boolean {
  if (v === undefined || v === "true" || v === "1") return true;
  if (v === "false" || v === "0") return false;
  throw flagError(flag, `${key}=${v}`, `${key} takes true or false`);
}

function requireAbsolute(flag: string, value: string, what: string, path: string): void {
  if (!isAbsolute(path)) throw flagError(flag, value, `${what} must be an absolute path`);
}

/**
 * `--mount type=bind,source=/a,target=/b,readonly[,idmap]` or `type=tmpfs,target=/t,tmpfs-size=64m` (type defaults
 * to bind; `idmap` is podman's key).
 */
export function parseMount(value: string): MountFlag {
  const flag = "--mount";
  let type = "bind";
  let source: string | undefined;
  let target: string | undefined;
  let readonly = false;
  let idmap = false;
  let size: number | undefined;
  for (const part of value.split(",")) {
    const eq = part.indexOf("=");
    const key = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    const v = eq < 0 ? undefined : part.slice(eq + 1);
    switch (key) {
      case "type":
        type = v ?? "";
        break;
      case "source":
      case "src":
        source = v;
        break;
      case "target":
      case "dst":
      case "destination":
        target = v;
        break;
      case "readonly":
      case "ro":
        readonly = parseBool(flag, key, v);
        break;
      case "tmpfs-size":
        size = parseSize(flag, v ?? "");
        break;
      case "idmap":
        idmap = parseBool(flag, key, v);
        break;
      case "":
        break;
      default:
        throw flagError(flag, value, `unknown key ${JSON.stringify(key)} (known: type, source, target, readonly, idmap, tmpfs-size)`);
    }
  }
  if (!target) throw flagError(flag, value, "target is required");
  requireAbsolute(flag, value, "target", target);
  if (type === "bind") {
    if (!source) throw flagError(flag, value, "source is required for a bind mount");
    requireAbsolute(flag, value, "source", source);
    if (size !== undefined) throw flagError(flag, value, "tmpfs-size is only for type=tmpfs");
    return idmap ? { type: "bind", source, target, readonly, idmap } : { type: "bind", source, target, readonly };
  }
  if (type === "tmpfs") {
    if (source) throw flagError(flag, value, "a tmpfs mount takes no source");
    // A tmpfs of a userns run is made inside its namespace, owned by its root: there is nothing to map.
    if (idmap) throw flagError(flag, value, "idmap is only for bind mounts");
    return size === undefined ? { type: "tmpfs", target, readonly } : { type: "tmpfs", target, readonly, size };
  }
  throw flagError(flag, value, `unsupported mount type ${JSON.stringify(type)} (bind or tmpfs)`);
}

/** `-v /host:/container[:OPTS]`, OPTS a comma-separated list of ro, rw and idmap (podman's); only host paths. */
export function parseVolume(value: string): MountFlag {
  const flag = "--volume";
  const parts = value.split(":");
  if (parts.length < 2 || parts.length > 3) throw flagError(flag, value, "expected SRC:DST[:ro|rw][,idmap]");
  const [source, target, opts] = parts as [string, string, string | undefined];
  requireAbsolute(flag, value, "the source (named volumes are not supported)", source);
  requireAbsolute(flag, value, "the destination", target);
  let mode: "ro" | "rw" | undefined;
  let idmap = false;
  for (const opt of opts === undefined ? [] : opts.split(",")) {
    if (opt === "ro" || opt === "rw") {
      if (mode !== undefined && mode !== opt) throw flagError(flag, value, "ro and rw contradict each other");
      mode = opt;
    } else if (opt === "idmap") idmap = true;
    // podman's idmap=uids=…;gids=… maps with other ranges than the run's: the run's own is the only one here.
    else if (opt.startsWith("idmap=")) throw flagError(flag, value, "idmap takes no options (the mount is mapped with the run's own ranges)");
    else throw flagError(flag, value, `unknown option ${JSON.stringify(opt)} (ro, rw or idmap)`);
  }
  const readonly = mode === "ro";
  return idmap ? { type: "bind", source, target, readonly, idmap } : { type: "bind", source, target, readonly };
}

/**
 * The run's user namespace from `--userns auto|host` (docker's and podman's spelling; podman's "" is host) or
 * podman's repeatable `--uidmap`/`--gidmap CONTAINER:HOST:SIZE`; undefined when none is given (the executor's
 * default applies). As in podman, maps of one kind only serve for both, and `--userns` with maps is refused.
 */
export function parseUserns(userns: string | undefined, uidmaps: readonly string[], gidmaps: readonly string[]): ProcessMeta["userns"] {
  if (userns !== undefined && (uidmaps.length > 0 || gidmaps.length > 0)) {
    throw new InvalidArgumentError(
      `--userns and --${uidmaps.length > 0 ? "uidmap" : "gidmap"} cannot be used together: the maps already make the run's user namespace`,
      { field: "--userns" },
    );
  }
  if (userns !== undefined) {
    if (userns === "auto" || userns === "host") return userns;
    // podman's alias for host.
    if (userns === "") return "host";
    const why = userns.startsWith("auto:")
      ? "auto takes no options (each run gets 65536 ids from the executor's pool)"
      : "use auto or host, or give --uidmap/--gidmap";
    throw flagError("--userns", userns, why);
  }
  if (uidmaps.length === 0 && gidmaps.length === 0) return undefined;
  const uidMap = uidmaps.map((m) => parseIdMapFlag(m, "--uidmap"));
  const gidMap = gidmaps.map((m) => parseIdMapFlag(m, "--gidmap"));
  return { uidMap: uidMap.length ? uidMap : gidMap, gidMap: gidMap.length ? gidMap : uidMap };
}

/** `--tmpfs /path[:size=64m][,ro]`. */
export function parseTmpfs(value: string): MountFlag {
  const flag = "--tmpfs";
  const colon = value.indexOf(":");
  const target = colon < 0 ? value : value.slice(0, colon);
  requireAbsolute(flag, value, "the destination", target);
  let size: number | undefined;
  let readonly = false;
  for (const opt of colon < 0 ? [] : value.slice(colon + 1).split(",")) {
    if (opt.startsWith("size=")) size = parseSize(flag, opt.slice(5));
    else if (opt === "ro") readonly = true;
    else if (opt === "rw" || opt === "") continue;
    else throw flagError(flag, value, `unsupported option ${JSON.stringify(opt)} (size=, ro, rw)`);
  }
  return size === undefined ? { type: "tmpfs", target, readonly } : { type: "tmpfs", target, readonly, size };
}

/** `-e K=V`, or a bare `-e K` that copies the caller's value (and is dropped when the caller has none). */
export function parseEnv(value: string, callerEnv: NodeJS.ProcessEnv = process.env): string | undefined {
  if (value.includes("\0")) throw flagError("--env", value, "must not contain NUL bytes");
  const eq = value.indexOf("=");
  if (eq === 0) throw flagError("--env", value, "the variable name is empty");
  if (eq > 0) return value;
  const v = callerEnv[value];
  return v === undefined ? undefined : `${value}=${v}`;
}

/** An env file: `K=V` lines, bare `K` lines (copied from the caller), `#` comments and blank lines. */
export function parseEnvFile(text: string, callerEnv: NodeJS.ProcessEnv = process.env): string[] {
  const out: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/^\s+/, "");
    if (line === "" || line.startsWith("#")) continue;
    const e = parseEnv(line, callerEnv);
    if (e !== undefined) out.push(e);
  }
  return out;
}

/** The env of `--env-file` files (first, in order) and `-e` flags (after, so they win). */
export async function envFromFlags(envFiles: readonly string[], envFlags: readonly string[]): Promise<string[]> {
  const env: string[] = [];
  for (const f of envFiles) {
    let text: string;
    try {
      text = await readFile(f, "utf8");
    } catch (err) {
      throw flagError("--env-file", f, (err as Error).message);
    }
    env.push(...parseEnvFile(text));
  }
  for (const e of envFlags) {
    const v = parseEnv(e);
    if (v !== undefined) env.push(v);
  }
  return env;
}

/** `--ulimit nofile=1024[:2048]`; hard defaults to soft; -1 or "unlimited" for no limit. */
export function parseUlimit(value: string): Ulimit {
  const flag = "--ulimit";
  const m = /^([a-z]+)=([^:]+)(?::(.+))?$/.exec(value);
  if (!m) throw flagError(flag, value, "expected NAME=SOFT[:HARD]");
  const name = m[1]!;
  if (!ULIMIT_NAMES.includes(name)) throw flagError(flag, value, `unknown ulimit ${JSON.stringify(name)}; known: ${ULIMIT_NAMES.join(", ")}`);
  const num = (s: string) => {
    if (s === "unlimited" || s === "-1") return -1;
    if (!/^\d+$/.test(s)) throw flagError(flag, value, `${JSON.stringify(s)} is not a number`);
    return Number(s);
  };
  const soft = num(m[2]!);
  const hard = m[3] === undefined ? soft : num(m[3]);
  if (hard !== -1 && (soft === -1 || soft > hard)) throw flagError(flag, value, "the soft limit is above the hard limit");
  return { name, soft, hard };
}

/** `--add-host name:ip`, `name=ip`, `name:[v6]`; `host-gateway` is resolved by the caller. */
export function parseAddHost(value: string): HostIP {
  const m = /^([^:=\s]+)[:=](.+)$/.exec(value);
  if (!m) throw flagError("--add-host", value, "expected NAME:IP");
  let ip = m[2]!;
  if (ip.startsWith("[") && ip.endsWith("]")) ip = ip.slice(1, -1);
  return { host: m[1]!, ip };
}

/** `--cpus 1.5` → a CFS quota over a 100 ms period. */
export function parseCpus(value: string): { cpuQuota: number; cpuPeriod: number } {
  const n = Number(value);
  if (!/^\d*\.?\d+$/.test(value) || !(n > 0)) throw flagError("--cpus", value, "expected a positive number of CPUs like 1.5");
  return { cpuPeriod: 100_000, cpuQuota: Math.max(1000, Math.round(n * 100_000)) };
}

export function parseExitCode(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) > 255) throw flagError("--valid-exit-code", value, "expected an exit code 0-255");
  return Number(value);
}

export function parseLabel(value: string): [string, string] {
  const eq = value.indexOf("=");
  const key = eq < 0 ? value : value.slice(0, eq);
  if (key === "") throw flagError("--label", value, "the key is empty");
  return [key, eq < 0 ? "" : value.slice(eq + 1)];
}
