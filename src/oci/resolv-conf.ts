import { InvalidArgumentError } from "../errors.js";
import { canonicalIp, isLoopback } from "./net-addr.js";

/** DNS settings that override the host's resolv.conf (docker's --dns, --dns-search, --dns-option). */
export interface DnsConfig {
  nameservers?: readonly string[] | undefined;
  searchDomains?: readonly string[] | undefined;
  options?: readonly string[] | undefined;
}

/** Used when no usable nameserver is left (docker's and BuildKit's choice). */
export const DEFAULT_NAMESERVERS: readonly string[] = ["8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844"];

export interface ParsedResolvConf {
  nameservers: string[];
  search: string[];
  options: string[];
  other: string[];
}

/** Parses resolv.conf text; comments and blank lines go, unparsable nameservers are dropped. */
export function parseResolvConf(text: string): ParsedResolvConf {
  const out: ParsedResolvConf = { nameservers: [], search: [], options: [], other: [] };
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const [key, ...fields] = line.split(/\s+/);
    switch (key) {
      case "nameserver":
        if (fields[0] !== undefined && canonicalIp(fields[0]) !== undefined) out.nameservers.push(fields[0]);
        break;
      case "search":
      case "domain":
        out.search = fields;
        break;
      case "options":
        out.options.push(...fields);
        break;
      default:
        out.other.push(line);
    }
  }
  return out;
}

/** Validates DNS overrides; a bad nameserver is an InvalidArgumentError naming it. */
export function validateDnsConfig(dns: DnsConfig | undefined): void {
  for (const ns of dns?.nameservers ?? []) {
    if (canonicalIp(ns) === undefined) throw new InvalidArgumentError(`bad nameserver address: ${ns}`, { field: "dns" });
  }
  for (const s of dns?.searchDomains ?? []) {
    if (/\s/.test(s) || s === "") throw new InvalidArgumentError(`bad DNS search domain: ${JSON.stringify(s)}`, { field: "dnsSearch" });
  }
  for (const o of dns?.options ?? []) {
    if (/\s/.test(o) || o === "") throw new InvalidArgumentError(`bad DNS option: ${JSON.stringify(o)}`, { field: "dnsOption" });
  }
}

export interface BuiltResolvConf {
  content: string;
  /** True when the defaults replaced nameservers that were all loopback or absent. */
  usedDefaultNameservers: boolean;
}

/**
 * The container's resolv.conf from the host's, as BuildKit makes it (reference §6.1). In the host's network
 * namespace the host file is kept as is (a local resolver is reachable there); elsewhere loopback nameservers
 * are dropped, and the public defaults used when none is left. Overrides replace their part of the file.
 */
export function buildResolvConf(source: string, opts: { hostNetwork: boolean; dns?: DnsConfig | undefined }): BuiltResolvConf {
  validateDnsConfig(opts.dns);
  const conf = parseResolvConf(source);
  let overridden = false;
  if (opts.dns?.nameservers?.length) {
    conf.nameservers = [...opts.dns.nameservers];
    overridden = true;
  }
  if (opts.dns?.searchDomains?.length) conf.search = opts.dns.searchDomains.filter((d) => d !== ".");
  if (opts.dns?.options?.length) conf.options = [...opts.dns.options];

  let usedDefaultNameservers = false;
  if ((!opts.hostNetwork || conf.nameservers.length === 0) && !overridden) {
    conf.nameservers = conf.nameservers.filter((ns) => !isLoopback(ns));
    if (conf.nameservers.length === 0) {
      conf.nameservers = [...DEFAULT_NAMESERVERS];
      usedDefaultNameservers = true;
    }
  }
  let content = "";
  for (const ns of conf.nameservers) content += `nameserver ${ns}\n`;
  if (conf.search.length) content += `search ${conf.search.join(" ")}\n`;
  if (conf.options.length) content += `options ${conf.options.join(" ")}\n`;
  for (const line of conf.other) content += `${line}\n`;
  return { content, usedDefaultNameservers };
}

/** The host file to start from: systemd-resolved's upstream list when /etc/resolv.conf is only its stub. */
export function resolvConfSource(etcResolvConf: string, hostNetwork: boolean): "/etc/resolv.conf" | "/run/systemd/resolve/resolv.conf" {
  if (hostNetwork) return "/etc/resolv.conf";
  const ns = parseResolvConf(etcResolvConf).nameservers;
  return ns.length === 1 && ns[0] === "127.0.0.53" ? "/run/systemd/resolve/resolv.conf" : "/etc/resolv.conf";
}
