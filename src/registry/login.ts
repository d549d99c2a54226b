/**
 * `ctrexec login`/`logout`: check credentials against a registry the way `docker login` does (GET /v2/ and
 * whatever auth flow its challenge asks for), and keep them in docker's config.json.
 */
import { InvalidArgumentError, UnknownError } from "../errors.js";
import { deleteCredentials, lookupCredentials, storeCredentials } from "./docker-config.js";
import { normalizeRegistryHost } from "./hosts.js";
import { discard, readBody, statusOf } from "./http.js";
import { registryMessage } from "./registry-errors.js";
import { RegistrySession, resolveOptions } from "./session.js";
import type { RegistryCredentials, RegistryOptions } from "./types.js";

function checkCredentials(credentials: RegistryCredentials): void {
  if (typeof credentials?.username !== "string" || credentials.username === "" || credentials.username.includes(":")) {
    throw new InvalidArgumentError("a username is needed, and it may not contain ':'", { field: "username" });
  }
  if (typeof credentials.password !== "string" || credentials.password === "") {
    throw new InvalidArgumentError("a password is needed", { field: "password" });
  }
}

/**
 * Resolves when `host` accepts `credentials` (or needs none: docker accepts that too); UnauthenticatedError
 * when it refuses them. `host` is "host[:port]" (scheme and path are dropped; Docker Hub's aliases are docker.io).
 */
export async function checkLogin(
  host: string,
  credentials: RegistryCredentials,
  options?: RegistryOptions & { signal?: AbortSignal },
): Promise<void> {
  checkCredentials(credentials);
  const domain = normalizeRegistryHost(host);
  const session = new RegistrySession(domain, resolveOptions({ ...options, credentials }));
  const signal = options?.signal;
  const what = `registry ${domain}`;
  const res = await session.get("/v2/", { scope: undefined, what: "its API (/v2/)", signal });
  if (statusOf(res) === 200) {
    discard(res, session.options.idleTimeoutMs);
    return;
  }
  const body = await readBody(res, { limit: 64 * 1024, idleTimeoutMs: session.options.idleTimeoutMs, signal, what: "an error", from: what }).catch(
    () => Buffer.alloc(0),
  );
  const message = registryMessage(body);
  throw new UnknownError(`${what} answered ${statusOf(res)} to /v2/${message ? ` (${message})` : ""}: is it a registry (distribution API v2)?`);
}

/** Writes the credentials to config.json (mode 0600, atomically, other keys kept); returns the file's path. */
export async function saveLogin(host: string, credentials: RegistryCredentials, options?: { dockerConfigDir?: string }): Promise<string> {
  checkCredentials(credentials);
  return storeCredentials(normalizeRegistryHost(host), credentials, options?.dockerConfigDir);
}

/** Removes the host's credentials from config.json; false when there were none. */
export async function removeLogin(host: string, options?: { dockerConfigDir?: string }): Promise<boolean> {
  return deleteCredentials(normalizeRegistryHost(host), options?.dockerConfigDir);
}

/** The credentials config.json holds for `host`, if any. */
export async function loadCredentials(host: string, options?: { dockerConfigDir?: string }): Promise<RegistryCredentials | undefined> {
  return (await lookupCredentials(normalizeRegistryHost(host), options?.dockerConfigDir)).credentials;
}
