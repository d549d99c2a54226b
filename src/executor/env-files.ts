import { randomBytes } from "node:crypto";
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
 * resolv.conf is rebuilt from the host's file on every run and rewritten only when its content changed: the
 * cache is keyed on content (source + DNS config), not on mtimes, so a DNS-config change or a replaced host file
 * is never missed (BuildKit's mtime check can, reference §12.17). A rewrite replaces the file atomically, so a
 * running container keeps the copy it started with.
 */
export class EnvFiles {
  readonly #dir: string;
  readonly #dns: DnsConfig | undefined;
  readonly #logger: Logger;
  readonly #written = new Map<string, string>();
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
  resolvConf(hostNetwork: boolean): Promise<string> {
    const name = hostNetwork ? "resolv-host.conf" : "resolv.conf";
    let p = this.#inflight.get(name);
    if (!p) {
      p = this.#writeResolvConf(name, hostNetwork).finally(() => this.#inflight.delete(name));
      this.#inflight.set(name, p);
    }
    return p;
  }

  async #writeResolvConf(name: string, hostNetwork: boolean): Promise<string> {
    const target = join(this.#dir, name);
    const etc = readOrEmpty(this.#etc.resolvConf);
    const source =
      resolvConfSource(etc, hostNetwork) === "/etc/resolv.conf" ? etc : readOrEmpty(this.#etc.systemdResolvConf);
    const { content, usedDefaultNameservers } = buildResolvConf(source, { hostNetwork, dns: this.#dns });
    if (this.#written.get(name) === content) return target;
    if (readOrEmpty(target) !== content) {
      if (usedDefaultNameservers) {
        this.#logger.info("no non-localhost DNS nameservers are left in resolv.conf; using default external servers");
      }
      await writeFileAtomic(target, content);
    }
    this.#written.set(name, content);
    return target;
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
      const path = join(this.#dir, "hosts");
      if (this.#written.get("hosts") !== content) {
        let p = this.#inflight.get("hosts");
        if (!p) {
          p = (async () => {
            if (readOrEmpty(path) !== content) await writeFileAtomic(path, content);
            this.#written.set("hosts", content);
            return path;
          })().finally(() => this.#inflight.delete("hosts"));
          this.#inflight.set("hosts", p);
        }
        await p;
      }
      return { path, release: async () => {} };
    }
    const path = join(perRunDir, `hosts.${randomBytes(8).toString("hex")}`);
    await writeFileAtomic(path, content);
    return { path, release: () => rm(path, { force: true }) };
  }
}
