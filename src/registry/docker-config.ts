/**
 * Docker's config.json, the file `docker login` writes: read for credentials, and written by login/logout so
 * that docker, nerdctl and ctrexec share one login. Only `auths` is ours to change; every other key (and every
 * other registry's entry) is kept as it was.
 */
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, realpath, rename, stat, unlink } from "node:fs/promises";
import { homedir } from "node:os";
import { dirname, join } from "node:path";
import { FailedPreconditionError } from "../errors.js";
import { configKeyFor, configKeyMatches } from "./hosts.js";
import type { RegistryCredentials } from "./types.js";

export function dockerConfigDir(explicit?: string): string {
  return explicit ?? process.env["DOCKER_CONFIG"] ?? join(homedir(), ".docker");
}

export function dockerConfigPath(explicit?: string): string {
  return join(dockerConfigDir(explicit), "config.json");
}

type Json = Record<string, unknown>;

function isObject(v: unknown): v is Json {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** The parsed file, or undefined when there is none. A file that is not a JSON object is refused, never overwritten. */
export async function readDockerConfig(path: string): Promise<Json | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new FailedPreconditionError(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
  if (text.trim() === "") return {};
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new FailedPreconditionError(`${path} is not valid JSON (${(err as Error).message}): fix or remove it`, { cause: err });
  }
  if (!isObject(parsed)) throw new FailedPreconditionError(`${path} is not a JSON object: fix or remove it`);
  return parsed;
}

export interface CredentialLookup {
  credentials?: RegistryCredentials;
  /** A credential helper config.json names for the host (credsStore/credHelpers), which ctrexec does not run. */
  helper?: string;
  /** The file that was read (for messages). */
  path: string;
}

/** The `auths` entry for `domain`: the key docker writes first, then any alias of it. */
function findEntry(auths: Json, domain: string): [string, Json] | undefined {
  const canonical = configKeyFor(domain);
  const first = auths[canonical];
  if (isObject(first)) return [canonical, first];
  for (const [key, value] of Object.entries(auths)) {
    if (isObject(value) && configKeyMatches(key, domain)) return [key, value];
  }
  return undefined;
}

export async function lookupCredentials(domain: string, configDir?: string): Promise<CredentialLookup> {
  const path = dockerConfigPath(configDir);
  const config = await readDockerConfig(path);
  if (config === undefined) return { path };
  const out: CredentialLookup = { path };
  const helpers = config["credHelpers"];
  if (isObject(helpers)) {
    for (const [key, value] of Object.entries(helpers)) {
      if (typeof value === "string" && configKeyMatches(key, domain)) out.helper = `docker-credential-${value}`;
    }
  }
  if (out.helper === undefined && typeof config["credsStore"] === "string" && config["credsStore"] !== "") {
    out.helper = `docker-credential-${config["credsStore"]}`;
  }
  const auths = config["auths"];
  const entry = isObject(auths) ? findEntry(auths, domain) : undefined;
  if (entry === undefined) return out;
  const [key, value] = entry;
  if (typeof value["auth"] === "string" && value["auth"] !== "") {
    const decoded = Buffer.from(value["auth"], "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon <= 0) throw new FailedPreconditionError(`the "auth" of ${key} in ${path} is not base64 of user:password: log in again`);
    out.credentials = { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
  } else if (typeof value["username"] === "string" && typeof value["password"] === "string") {
    out.credentials = { username: value["username"], password: value["password"] };
  }
  return out;
}

/**
 * Writes `config` to `path` atomically (a temporary file in the same directory, fsync, rename), mode 0600 since
 * it holds passwords. A symlinked config.json is written through to its target, and an existing file's owner is
 * kept (root logging in for a user whose DOCKER_CONFIG it is must not take the file from them).
 */
export async function writeDockerConfig(path: string, config: Json): Promise<void> {
  const target = await realpath(path).catch(() => path);
  const dir = dirname(target);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const owner = await stat(target).catch(() => undefined);
  const tmp = join(dir, `.config.json.${process.pid}.${randomBytes(6).toString("hex")}.tmp`);
  const fh = await open(tmp, "wx", 0o600);
  try {
    try {
      await fh.chmod(0o600);
      if (owner !== undefined && process.getuid !== undefined && (owner.uid !== process.getuid() || owner.gid !== process.getgid?.())) {
        await fh.chown(owner.uid, owner.gid);
      }
      // Tabs, as docker's own MarshalIndent writes it, so that a diff of the file shows only what changed.
      await fh.writeFile(`${JSON.stringify(config, null, "\t")}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await unlink(tmp).catch(() => {});
    throw err;
  }
  // The rename is durable only once the directory is.
  const dh = await open(dir, "r").catch(() => undefined);
  await dh?.sync().catch(() => {});
  await dh?.close();
}

/** Sets `domain`'s entry to `credentials` (under the key docker uses) and writes the file. */
export async function storeCredentials(domain: string, credentials: RegistryCredentials, configDir?: string): Promise<string> {
  const path = dockerConfigPath(configDir);
  const config = (await readDockerConfig(path)) ?? {};
  const auths = isObject(config["auths"]) ? config["auths"] : {};
  auths[configKeyFor(domain)] = { auth: Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64") };
  config["auths"] = auths;
  await writeDockerConfig(path, config);
  return path;
}

/** Removes every entry that names `domain`; false (and the file untouched) when there was none. */
export async function deleteCredentials(domain: string, configDir?: string): Promise<boolean> {
  const path = dockerConfigPath(configDir);
  const config = await readDockerConfig(path);
  const auths = config?.["auths"];
  if (config === undefined || !isObject(auths)) return false;
  const keys = Object.keys(auths).filter((k) => configKeyMatches(k, domain));
  if (keys.length === 0) return false;
  for (const k of keys) delete auths[k];
  await writeDockerConfig(path, config);
  return true;
}
