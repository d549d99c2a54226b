import { InvalidArgumentError } from "../errors.js";
import { canonicalIp } from "./net-addr.js";

/** The hostname of a container that names none. BuildKit's is `buildkitsandbox`; ours names the tool. */
export const DEFAULT_HOSTNAME = "ctrexec";

export interface HostIP {
  host: string;
  ip: string;
}

const HOSTNAME_RE = /^[A-Za-z0-9]([A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?$/;

/** A hostname check strict enough that nothing can be smuggled into /etc/hosts or the UTS name. */
export function validateHostname(name: string, field = "hostname"): void {
  if (!HOSTNAME_RE.test(name)) {
    throw new InvalidArgumentError(`invalid ${field} ${JSON.stringify(name)}: use letters, digits, '.', '-' and '_' (at most 253 characters)`, {
      field,
    });
  }
}

/** Validates extra hosts and returns them with canonical IPs. */
export function normalizeExtraHosts(extraHosts: readonly HostIP[]): HostIP[] {
  return extraHosts.map(({ host, ip }) => {
    validateHostname(host, "extraHosts");
    const c = canonicalIp(ip);
    if (c === undefined) throw new InvalidArgumentError(`failed to parse IP ${ip} (extra host ${host})`, { field: "extraHosts" });
    return { host, ip: c };
  });
}

/**
 * /etc/hosts for a container: localhost with the hostname (so `hostname` resolves), the IPv6 localhost line,
 * then the extra hosts in the order given, not deduplicated.
 */
export function buildHosts(hostname: string, extraHosts: readonly HostIP[] = []): string {
  const name = hostname === "" ? DEFAULT_HOSTNAME : hostname;
  validateHostname(name);
  let content = `127.0.0.1\tlocalhost ${name}\n::1\tlocalhost ip6-localhost ip6-loopback\n`;
  for (const { host, ip } of normalizeExtraHosts(extraHosts)) content += `${ip}\t${host}\n`;
  return content;
}
