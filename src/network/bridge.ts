import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { CanceledError, InvalidArgumentError } from "../errors.js";
import { ownerAlive, ownerId } from "../util/owner.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { cniAdd, cniDel, type CniNetworkConfig, DEFAULT_PLUGIN_DIRS, findPlugin, loadNetworkConfig, validateConfig } from "./cni.js";
import { createNetns, destroyNetns } from "./netns.js";
import type { NetworkHandle, NetworkProvider } from "./types.js";

export const DEFAULT_NETWORK_NAME = "ctrexec";
export const DEFAULT_BRIDGE = "ctrexec0";
export const DEFAULT_SUBNET = "10.89.0.0/16";
export const DEFAULT_CNI_CONFIG_DIR = "/etc/cni/net.d";
/**
 * The built-in network's IPAM store (host-local keeps a directory per network name in it): one for the whole
 * host, as with host-local's own default, because every executor on the network shares its bridge and subnet
 * whatever its state dir. A store per state dir handed out the same addresses twice on one bridge.
 */
export const DEFAULT_IPAM_DIR = "/var/lib/cni/networks";

export interface BridgeOptions {
  /** Where namespace files go: `<stateDir>/net/<namespace>/` (IPAM state: DEFAULT_IPAM_DIR). */
  stateDir: string;
  /** containerd namespace, to keep executors of different namespaces apart. */
  namespace: string;
  /** A CNI network of this name in `configDir` is used when present; else the built-in bridge config. */
  networkName?: string;
  configDir?: string;
  pluginDirs?: readonly string[];
  /** Built-in config: bridge device, subnet, and whether to masquerade outgoing traffic (default true). */
  bridge?: string;
  subnet?: string;
  ipMasq?: boolean;
  /** Namespaces kept ready, so that namespace creation and CNI ADD leave the run's path. 0 disables. */
  poolSize?: number;
  logger?: Logger;
}

/** The built-in network: a bridge with host-local IPAM, then the firewall plugin. */
export function defaultBridgeConfig(o: { name?: string; bridge?: string; subnet?: string; ipMasq?: boolean; dataDir?: string }): CniNetworkConfig {
  const subnet = o.subnet ?? DEFAULT_SUBNET;
  if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(subnet)) throw new InvalidArgumentError(`bad subnet ${JSON.stringify(subnet)}: expected an IPv4 CIDR`, { field: "subnet" });
  return {
    cniVersion: "1.0.0",
    name: o.name ?? DEFAULT_NETWORK_NAME,
    plugins: [
      {
        type: "bridge",
        bridge: o.bridge ?? DEFAULT_BRIDGE,
        isGateway: true,
        isDefaultGateway: true,
        ipMasq: o.ipMasq ?? true,
        hairpinMode: true,
        ipam: { type: "host-local", ranges: [[{ subnet }]], ...(o.dataDir ? { dataDir: o.dataDir } : {}) },
      },
      { type: "firewall", backend: "iptables" },
    ],
  };
}

const LOOPBACK: CniNetworkConfig = { cniVersion: "1.0.0", name: "lo", plugins: [{ type: "loopback" }] };

/** One ready network namespace: its file, CNI container id and ADD result. */
interface Netns {
  id: string;
  path: string;
  result: Record<string, unknown>;
  address: string | undefined;
  gateway: string | undefined;
}

/** What prune needs to undo a namespace of a dead process: kept beside the namespace file. */
interface NetnsRecord {
  owner: string;
  config: CniNetworkConfig;
  result: Record<string, unknown>;
  pluginDirs: readonly string[];
}

function firstIp(result: Record<string, unknown>): { address: string | undefined; gateway: string | undefined } {
  const ips = Array.isArray(result["ips"]) ? (result["ips"] as { address?: string; gateway?: string }[]) : [];
  const ip = ips.find((i) => i.address && !i.address.startsWith("127.") && i.address !== "::1/128");
  return { address: ip?.address?.split("/")[0], gateway: ip?.gateway };
}

/**
 * Bridge networking through the CNI plugins (bridge, host-local, firewall, loopback), with a pool of ready
 * namespaces. A namespace goes back to the pool after a sandboxed run (whose process had no CAP_NET_ADMIN, so it
 * could not change the namespace, and whose processes are all gone); after a privileged run it is destroyed.
 */
export class BridgeProvider implements NetworkProvider {
  readonly config: CniNetworkConfig;
  readonly #dir: string;
  readonly #pluginDirs: readonly string[];
  readonly #poolSize: number;
  readonly #logger: Logger;
  readonly #idle: Netns[] = [];
  /** Handed out and not back yet: they count toward the pool, since a sandboxed run gives its one back. */
  #inUse = 0;
  /** Destroys running in the background (after privileged runs); close() waits for them. */
  readonly #destroying = new Set<Promise<void>>();
  #filling: Promise<void> | undefined;
  #lock: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(config: CniNetworkConfig, dir: string, options: BridgeOptions) {
    this.config = config;
    this.#dir = dir;
    this.#pluginDirs = options.pluginDirs ?? DEFAULT_PLUGIN_DIRS;
    this.#poolSize = options.poolSize ?? 4;
    this.#logger = options.logger ?? silentLogger;
  }

  /** Loads or builds the config, checks that every plugin exists, and starts filling the pool. */
  static async create(options: BridgeOptions): Promise<BridgeProvider> {
    const name = options.networkName ?? DEFAULT_NETWORK_NAME;
    const pluginDirs = options.pluginDirs ?? DEFAULT_PLUGIN_DIRS;
    const fromDir = await loadNetworkConfig(options.configDir ?? DEFAULT_CNI_CONFIG_DIR, name);
    const config = fromDir
      ? validateConfig(fromDir, name)
      : defaultBridgeConfig({
          name,
          ...(options.bridge ? { bridge: options.bridge } : {}),
          ...(options.subnet ? { subnet: options.subnet } : {}),
          ...(options.ipMasq !== undefined ? { ipMasq: options.ipMasq } : {}),
          dataDir: DEFAULT_IPAM_DIR,
        });
    for (const p of [...config.plugins, ...LOOPBACK.plugins]) await findPlugin(p.type, pluginDirs);
    const dir = join(options.stateDir, "net", options.namespace);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const provider = new BridgeProvider(config, dir, options);
    provider.#fill();
    return provider;
  }

  /** CNI ADDs share the bridge and IPAM files; one at a time avoids the plugins racing to create the bridge. */
  #serial<T>(f: () => Promise<T>): Promise<T> {
    const next = this.#lock.then(f, f);
    this.#lock = next.catch(() => {});
    return next;
  }

  async #make(): Promise<Netns> {
    const id = `ctrexec-${randomBytes(8).toString("hex")}`;
    const path = join(this.#dir, id);
    await createNetns(path);
    const rt = { containerId: id, netns: path, pluginDirs: this.#pluginDirs };
    try {
      await cniAdd(LOOPBACK, { ...rt, ifname: "lo" });
      const result = await this.#serial(() => cniAdd(this.config, { ...rt, ifname: "eth0" }));
      const record: NetnsRecord = { owner: ownerId(), config: this.config, result, pluginDirs: this.#pluginDirs };
      await writeFile(`${path}.json`, JSON.stringify(record), { mode: 0o600 });
      return { id, path, result, ...firstIp(result) };
    } catch (err) {
      // Undo a partial ADD: the veth, the IPAM reservation, the namespace file.
      await cniDel(this.config, { ...rt, ifname: "eth0" }).catch(() => {});
      await destroyNetns(path);
      await rm(`${path}.json`, { force: true });
      throw err;
    }
  }

  async #destroy(ns: Netns): Promise<void> {
    try {
      await cniDel(this.config, { containerId: ns.id, netns: ns.path, ifname: "eth0", pluginDirs: this.#pluginDirs }, ns.result);
    } catch (err) {
      this.#logger.warn("CNI DEL failed", { netns: ns.path, error: err });
    }
    await destroyNetns(ns.path);
    await rm(`${ns.path}.json`, { force: true });
  }

  #fill(): void {
    if (this.#closed || this.#filling || this.#idle.length + this.#inUse >= this.#poolSize) return;
    this.#filling = (async () => {
      try {
        while (!this.#closed && this.#idle.length + this.#inUse < this.#poolSize) {
          const ns = await this.#make();
          if (this.#closed) await this.#destroy(ns);
          else this.#idle.push(ns);
        }
      } catch (err) {
        this.#logger.warn("filling the network namespace pool failed", { error: err });
      } finally {
        this.#filling = undefined;
      }
    })();
  }

  async create(options: { id: string; hostname: string; signal?: AbortSignal | undefined; privileged?: boolean }): Promise<NetworkHandle & { address?: string; gateway?: string }> {
    if (this.#closed) throw new CanceledError("the bridge network provider is closed");
    const ns = this.#idle.pop() ?? (await this.#make());
    this.#inUse++;
    this.#fill();
    let closed = false;
    const reusable = !options.privileged;
    return {
      namespace: { kind: "path", path: ns.path },
      hostNetwork: false,
      ...(ns.address ? { address: ns.address } : {}),
      ...(ns.gateway ? { gateway: ns.gateway } : {}),
      close: async () => {
        if (closed) return;
        closed = true;
        this.#inUse--;
        if (reusable && !this.#closed && this.#idle.length < this.#poolSize) {
          this.#idle.push(ns);
          return;
        }
        // Off the run's path: the run is over, only its namespace remains to undo.
        const d = this.#destroy(ns).finally(() => this.#destroying.delete(d));
        this.#destroying.add(d);
        this.#fill();
      },
    };
  }

  /** Destroys the idle namespaces (CNI DEL, unmount, remove). Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#filling;
    await Promise.all([...this.#destroying]);
    for (const ns of this.#idle.splice(0)) await this.#destroy(ns);
  }
}

/** Removes network namespaces that executors now gone left in `<stateDir>/net/<namespace>/`. */
export async function pruneNetns(stateDir: string, namespace: string): Promise<string[]> {
  const dir = join(stateDir, "net", namespace);
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed;
  }
  for (const name of names.filter((n) => !n.endsWith(".json"))) {
    const path = join(dir, name);
    let record: NetnsRecord | undefined;
    try {
      record = JSON.parse(await readFile(`${path}.json`, "utf8")) as NetnsRecord;
    } catch {
      record = undefined;
    }
    if (record && ownerAlive(record.owner) !== false) continue;
    // No record yet: a live process may be between making the namespace and writing its record.
    if (!record && Date.now() - (await stat(path).then((s) => s.mtimeMs, () => 0)) < 60_000) continue;
    if (record) {
      await cniDel(record.config, { containerId: name, netns: path, ifname: "eth0", pluginDirs: record.pluginDirs }, record.result).catch(() => {});
    }
    await destroyNetns(path);
    await rm(`${path}.json`, { force: true });
    removed.push(`network namespace ${path}`);
  }
  return removed;
}
