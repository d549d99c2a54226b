/**
 * Connection pools. One keep-alive agent for plain HTTP and one per set of extra CAs for HTTPS, shared by all
 * clients of the process, so that the requests of a pull (and of the next pull) reuse connections.
 *
 * Trust: Node's `ca` option replaces its default store, NODE_EXTRA_CA_CERTS included (checked: a server signed
 * by an extra CA fails once `ca` is given), and that store lacks the CAs an administrator added to the system.
 * So every agent trusts, as docker does, the system bundle (Node's bundled roots where there is none) +
 * NODE_EXTRA_CA_CERTS + the caller's `caCerts`, built once into a SecureContext the agent reuses (parsing ~150
 * PEMs per connection would cost more than the request).
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import tls from "node:tls";

const SYSTEM_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

let baseCAs: string[] | undefined;

/**
 * The system's CAs (what docker and containerd trust: Debian's ca-certificates bundle, which includes what an
 * administrator added), or Node's bundled roots where there is no system bundle; plus NODE_EXTRA_CA_CERTS. Not
 * both sets: they are mostly the same certificates, and each one parsed costs start-up time of every HTTPS pull.
 */
function defaultCAs(): string[] {
  if (baseCAs === undefined) {
    const read = (file: string | undefined): string | undefined => {
      if (!file) return undefined;
      try {
        return readFileSync(file, "utf8");
      } catch {
        // No system bundle (a minimal image) or an unreadable extra file, which Node itself warns about.
        return undefined;
      }
    };
    const system = read(SYSTEM_BUNDLE);
    const extra = read(process.env["NODE_EXTRA_CA_CERTS"]);
    baseCAs = [...(system !== undefined ? [system] : tls.rootCertificates), ...(extra !== undefined ? [extra] : [])];
  }
  return baseCAs;
}

const httpAgent = new http.Agent({ keepAlive: true, scheduling: "lifo" });
const httpsAgents = new Map<string, https.Agent>();

export function agentFor(protocol: string, caCerts: readonly (string | Buffer)[] | undefined): http.Agent {
  if (protocol === "http:") return httpAgent;
  const extra = (caCerts ?? []).map((c) => (typeof c === "string" ? c : c.toString("utf8")));
  const key = extra.length === 0 ? "" : createHash("sha256").update(extra.join("\n")).digest("hex");
  let agent = httpsAgents.get(key);
  if (agent === undefined) {
    const secureContext = tls.createSecureContext({ ca: [...defaultCAs(), ...extra] });
    agent = new https.Agent({ keepAlive: true, scheduling: "lifo", secureContext });
    httpsAgents.set(key, agent);
  }
  return agent;
}
