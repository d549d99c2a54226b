import { isIP } from "node:net";

/** The canonical text of an IP address (RFC 5952 for IPv6; an IPv4-mapped IPv6 prints as dotted IPv4). */
export function canonicalIp(ip: string): string | undefined {
  const v = isIP(ip);
  if (v === 4) return ip;
  if (v !== 6 || ip.includes("%")) return undefined;
  const host = new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  const mapped = /^::ffff:([0-9a-f]{1,4}):([0-9a-f]{1,4})$/.exec(host);
  if (mapped) {
    const hi = parseInt(mapped[1]!, 16);
    const lo = parseInt(mapped[2]!, 16);
    return `${hi >> 8}.${hi & 255}.${lo >> 8}.${lo & 255}`;
  }
  return host;
}

/** 127.0.0.0/8, ::1, and their IPv4-mapped forms. */
export function isLoopback(ip: string): boolean {
  const c = canonicalIp(ip);
  if (c === undefined) return false;
  return c === "::1" || /^127\./.test(c);
}
