import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { writeFileAtomic } from "../fs/atomic-write.js";
import { buildHosts, DEFAULT_HOSTNAME, type HostIP, normalizeExtraHosts } from "../oci/hosts.js";
import { buildResolvConf, type DnsConfig, resolvConfSource } from "../oci/resolv-conf.js";
import { type Logger, silentLogger } from "../util/logger.js";

function readOrEmpty(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return "";
    throw err;
  }
}

/**
 * The resolv.conf and hosts files that runs bind-mount read-only, kept in the executor's state dir.
 *
 * resolv.conf is rebuilt from the host's file on every run: keyed on content (source + DNS config), not on
 * mtimes, so a DNS-config change or a replaced host file is never missed (BuildKit's mtime check can, reference
 * §12.17). Shared files are named by their content's hash (`resolv-<hash>.conf`, `hosts-<hash>`): executors and
 * processes with different DNS settings, or different versions, share a state dir without ever overwriting
 * each other's file, and a file's content never changes under a run that is about to mount it. A change makes
 * a new file; the old ones stay (a few hundred bytes per distinct content; a running container holds its own
 * through its bind mount anyway).
 */
export class EnvFiles {
  readonly #dir: string;
  readonly #dns: DnsConfig | undefined;
  readonly #logger: Logger;
  /** Kind and content → its shared file, once written or found. */
  readonly #files = new Map<string, string>();
  readonly #inflight = new Map<string, Promise<string>>();
  /** Paths for test hooks; production reads the host's files. */
  readonly #etc: { resolvConf: string; systemdResolvConf: string };

  constructor(options: {
    dir: string;
    dns?: DnsConfig | undefined;
    logger?: Logger | undefined;
    hostFiles?: { resolvConf: string; systemdResolvConf: string };
  }) {
    this.#dir = options.dir;
    this.#dns = options.dns;
    this.#logger = options.logger ?? silentLogger;
    this.#etc = options.hostFiles ?? {
      resolvConf: "/etc/resolv.conf",
      systemdResolvConf: "/run/systemd/resolve/resolv.conf",
    };
  }

  /** The resolv.conf for a run in the host's network namespace or in its own. */
  async resolvConf(hostNetwork: boolean): Promise<string> {
    const etc = readOrEmpty(this.#etc.resolvConf);
    const source = resolvConfSource(etc, hostNetwork) === "/etc/resolv.conf" ? etc : readOrEmpty(this.#etc.systemdResolvConf);
    const { content, usedDefaultNameservers } = buildResolvConf(source, { hostNetwork, dns: this.#dns });
    if (usedDefaultNameservers && !this.#files.has(`resolv:${content}`)) {
      this.#logger.info("no non-localhost DNS nameservers are left in resolv.conf; using default external servers");
    }
    return this.#shared("resolv", content);
  }

  /** The shared file holding `content`, named by its hash: written once (atomically) unless it is there. */
  #shared(kind: "resolv" | "hosts", content: string): Promise<string> {
    const key = `${kind}:${content}`;
    const known = this.#files.get(key);
    if (known) return Promise.resolve(known);
    let p = this.#inflight.get(key);
    if (!p) {
      const hash = createHash("sha256").update(content).digest("hex").slice(0, 16);
      const path = join(this.#dir, kind === "resolv" ? `resolv-${hash}.conf` : `hosts-${hash}`);
      p = (async () => {
        if (readOrEmpty(path) !== content) await writeFileAtomic(path, content);
        this.#files.set(key, path);
        return path;
      })().finally(() => this.#inflight.delete(key));
      this.#inflight.set(key, p);
    }
    return p;
  }

  /**
   * The hosts file for a run. The default hostname without extra hosts shares one file (hostname "" counts as
   * the default, unlike BuildKit, §12.18); anything else gets its own file in `perRunDir`, removed by `release`.
   */
  async hosts(
    hostname: string,
    extraHosts: readonly HostIP[],
    perRunDir: string = this.#dir,
  ): Promise<{ path: string; release: () => Promise<void> }> {
    const name = hostname === "" ? DEFAULT_HOSTNAME : hostname;
    const extras = normalizeExtraHosts(extraHosts);
    const content = buildHosts(name, extras);
    if (name === DEFAULT_HOSTNAME && extras.length === 0) {
      return { path: await this.#shared("hosts", content), release: async () => {} };
    }
    const path = join(perRunDir, `hosts.${randomBytes(8).toString("hex")}`);
    await writeFileAtomic(path, content);
    return { path, release: () => rm(path, { force: true }) };
  }
}
