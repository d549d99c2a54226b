/**
 * Registry hosts: where a reference's domain is served from, which config.json keys name it, and whether plain
 * HTTP may be used for it.
 */
import { InvalidArgumentError } from "../errors.js";
import { DOCKER_HUB_DOMAIN, isRegistryDomain } from "./reference.js";

/** Docker Hub's API host; "docker.io" is only its name in references. */
export const DOCKER_HUB_API_HOST = "registry-1.docker.io";
/** The key docker writes Docker Hub's credentials under in config.json (a relic of the v1 index). */
export const DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/";
const HUB_ALIASES = new Set([DOCKER_HUB_DOMAIN, "index.docker.io", DOCKER_HUB_API_HOST]);

/** The host:port the registry API of `domain` is reached at. */
export function apiHost(domain: string): string {
  return domain === DOCKER_HUB_DOMAIN ? DOCKER_HUB_API_HOST : domain;
}

/** "host:port" -> ["host", "port"], "[::1]:5000" -> ["::1", "5000"], "host" -> ["host", undefined]. */
export function splitHostPort(hostPort: string): [host: string, port: string | undefined] {
  if (hostPort.startsWith("[")) {
    const end = hostPort.indexOf("]");
    const rest = hostPort.slice(end + 1);
    return [hostPort.slice(1, end), rest.startsWith(":") ? rest.slice(1) : undefined];
  }
  const colon = hostPort.lastIndexOf(":");
  return colon < 0 ? [hostPort, undefined] : [hostPort.slice(0, colon), hostPort.slice(colon + 1)];
}

/** Loopback by its literal name: 127.0.0.0/8, ::1, localhost. No DNS: a name that merely resolves there does not count. */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  if (h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1") return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(h);
  return m?.slice(1).every((o) => Number(o) <= 255) ?? false;
}

/** An insecureRegistries entry or a login argument as host[:port]: scheme and path dropped. */
export function stripToHost(entry: string): string {
  return entry
    .trim()
    .replace(/^[a-z][a-z0-9+.-]*:\/\//i, "")
    .replace(/\/.*$/, "");
}

/**
 * Whether plain HTTP may be used for `hostPort`: loopback (as docker allows without configuration), or named in
 * `insecure` as "host:port" or as "host" (any port).
 */
export function plainHttpAllowed(hostPort: string, insecure: readonly string[] | undefined): boolean {
  const [host, port] = splitHostPort(hostPort);
  if (isLoopbackHost(host)) return true;
  for (const raw of insecure ?? []) {
    const entry = stripToHost(raw).toLowerCase();
    const [eh, ep] = splitHostPort(entry);
    if (eh === host.toLowerCase() && (ep === undefined || ep === port)) return true;
  }
  return false;
}

/**
 * A registry named on a command line or in config.json as the domain references use: Docker Hub's aliases
 * (with or without https:// and /v1/) are "docker.io". InvalidArgumentError (field "registry") for anything else
 * that is no host.
 */
export function normalizeRegistryHost(input: string): string {
  const host = stripToHost(input);
  if (HUB_ALIASES.has(host.toLowerCase())) return DOCKER_HUB_DOMAIN;
  if (!isRegistryDomain(host)) {
    throw new InvalidArgumentError(`${JSON.stringify(input)} is not a registry host: give host or host:port, such as registry.example.com:5000`, {
      field: "registry",
    });
  }
  return host;
}

/** The config.json key docker writes a registry's credentials under. */
export function configKeyFor(domain: string): string {
  return domain === DOCKER_HUB_DOMAIN ? DOCKER_HUB_CONFIG_KEY : domain;
}

/** Whether a config.json key names `domain` (docker's ConvertToHostname, plus Docker Hub's aliases). */
export function configKeyMatches(key: string, domain: string): boolean {
  const host = stripToHost(key);
  if (domain === DOCKER_HUB_DOMAIN) return HUB_ALIASES.has(host.toLowerCase());
  return host.toLowerCase() === domain.toLowerCase();
}
