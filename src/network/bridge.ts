import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, statfs, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { CanceledError, InvalidArgumentError } from "../errors.js";
import { type Logger, silentLogger } from "../util/logger.js";
import { ownerAlive, ownerId } from "../util/owner.js";
import { type CniNetworkConfig, cniAdd, cniDel, DEFAULT_PLUGIN_DIRS, findPlugin, loadNetworkConfig, validateConfig } from "./cni.js";
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
  if (!/^\d+\.\d+\.\d+\.\d+\/\d+$/.test(subnet))
    throw new InvalidArgumentError(`bad subnet ${JSON.stringify(subnet)}: expected an IPv4 CIDR`, { field: "subnet" });
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

/**
 * What prune needs to undo a namespace of a dead process, kept beside the namespace file as `<id>.json`. It is
 * written before the namespace file exists and removed after the namespace is gone, so a process dying at any
 * moment leaves either nothing or a record naming all there is to undo: CNI DEL needs no previous result, so
 * the IPAM reservation of an ADD that was cut short is released too.
 */
interface NetnsRecord {
  owner: string;
  config: CniNetworkConfig;
  pluginDirs: readonly string[];
  /** CNI_CONTAINERID and CNI_IFNAME of the ADD (records of older versions: the file's name, "eth0"). */
  containerId?: string;
  ifname?: string;
  /** The ADD's result, once it completed. */
  result?: Record<string, unknown>;
}

const run = promisify(execFile);
/** statfs(2) f_type of a namespace file (nsfs) bind-mounted on a path. */
const NSFS_MAGIC = 0x6e736673;

/**
 * Writes a namespace's record whole or not at all (temporary file, then rename). The temporary file's name
 * carries its owner, so prune can tell a dead writer's leftover from a live one's.
 */
async function writeRecord(path: string, record: NetnsRecord): Promise<void> {
  const tmp = `${path}.json.${encodeURIComponent(record.owner)}.tmp`;
  try {
    await writeFile(tmp, JSON.stringify(record), { mode: 0o600 });
    await rename(tmp, `${path}.json`);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** Whether a network namespace is mounted on `path` (not only the empty file createNetns starts from). */
async function isNetnsMount(path: string): Promise<boolean> {
  return statfs(path).then(
    (s) => s.type === NSFS_MAGIC,
    () => false,
  );
}

/**
 * A previous result for the DEL of an ADD that was cut short: the addresses on the namespace's interface. The
 * firewall plugin removes its rules only for the addresses it is given. Trusted: no container ever ran in a
 * namespace whose ADD did not complete.
 */
async function addressesAsResult(path: string, ifname: string, cniVersion: string): Promise<Record<string, unknown> | undefined> {
  try {
    const { stdout } = await run("nsenter", [`--net=${path}`, "ip", "-j", "addr", "show", "dev", ifname]);
    const links = JSON.parse(stdout) as { addr_info?: { local?: string; prefixlen?: number; scope?: string }[] }[];
    const ips = links
      .flatMap((l) => l.addr_info ?? [])
      .filter((a) => a.local && a.scope === "global")
      .map((a) => ({ address: `${a.local}/${a.prefixlen}` }));
    return ips.length ? { cniVersion, ips } : undefined;
  } catch {
    return undefined; // no interface yet: the firewall plugin had nothing to add either
  }
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
    const record: NetnsRecord = { owner: ownerId(), config: this.config, pluginDirs: this.#pluginDirs, containerId: id, ifname: "eth0" };
    // The record first: whatever this process dies in the middle of (the namespace, the ADD), prune can undo.
    await writeRecord(path, record);
    const rt = { containerId: id, netns: path, pluginDirs: this.#pluginDirs };
    try {
      await createNetns(path);
      await cniAdd(LOOPBACK, { ...rt, ifname: "lo" });
      const result = await this.#serial(() => cniAdd(this.config, { ...rt, ifname: "eth0" }));
      // With the result, a DEL also removes what plugins keyed on the addresses (the firewall's rules).
      await writeRecord(path, { ...record, result });
      return { id, path, result, ...firstIp(result) };
    } catch (err) {
      // Undo a partial ADD: the veth, the IPAM reservation, the namespace file; the record last.
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

  async create(options: {
    id: string;
    hostname: string;
    signal?: AbortSignal | undefined;
    privileged?: boolean;
  }): Promise<NetworkHandle & { address?: string; gateway?: string }> {
    if (this.#closed) throw new CanceledError("the bridge network provider is closed");
    const ns = this.#idle.pop() ?? (await this.#make());
    this.#inUse++;
    this.#fill();
    let closed = false;
    return {
      namespace: { kind: "path", path: ns.path },
      hostNetwork: false,
      ...(ns.address ? { address: ns.address } : {}),
      ...(ns.gateway ? { gateway: ns.gateway } : {}),
      close: async ({ reusable }) => {
        if (closed) return;
        closed = true;
        this.#inUse--;
        // A privileged run may have changed the namespace; a run whose task may live on may still be in it.
        if (reusable && !options.privileged && !this.#closed && this.#idle.length < this.#poolSize) {
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

  /** Resolves once the pool has stopped filling (it is full, or a namespace could not be made): warm. */
  async ready(): Promise<void> {
    await this.#filling;
  }

  /** Destroys the idle namespaces (CNI DEL, unmount, remove). Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#filling;
    await Promise.all([...this.#destroying]);
    for (const ns of this.#idle.splice(0)) await this.#destroy(ns);
  }
}

/**
 * Removes the network namespaces that executors now gone left in `<stateDir>/net/<namespace>/`, with CNI DEL
 * from their records (releasing IPAM reservations, veths, firewall rules), also of ADDs that were cut short.
 * A namespace whose DEL fails is kept, with its record, for the next prune to try again (logged).
 */
export async function pruneNetns(stateDir: string, namespace: string, logger: Logger = silentLogger): Promise<string[]> {
  const dir = join(stateDir, "net", namespace);
  const removed: string[] = [];
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return removed;
  }
  // Records first written, then renamed into place: a dead writer's temporary file is all it left.
  for (const name of names.filter((n) => n.endsWith(".tmp"))) {
    const owner = /^[^.]+\.json\.(.+)\.tmp$/.exec(name)?.[1];
    let decoded: string | undefined;
    try {
      decoded = owner === undefined ? undefined : decodeURIComponent(owner);
    } catch {
      decoded = undefined;
    }
    if (decoded === undefined || ownerAlive(decoded) !== false) continue;
    await rm(join(dir, name), { force: true });
  }
  const ids = new Set(names.filter((n) => !n.endsWith(".tmp")).map((n) => n.replace(/\.json$/, "")));
  for (const id of ids) {
    const path = join(dir, id);
    let record: NetnsRecord | undefined;
    try {
      record = JSON.parse(await readFile(`${path}.json`, "utf8")) as NetnsRecord;
    } catch {
      record = undefined;
    }
    if (record && ownerAlive(record.owner) !== false) continue;
    if (!record) {
      // Only older versions made a namespace before its record: one of those may be between the two.
      if (
        !names.includes(id) ||
        Date.now() -
          (await stat(path).then(
            (s) => s.mtimeMs,
            () => 0,
          )) <
          60_000
      )
        continue;
    } else {
      // A namespace file without the namespace mounted on it (creation cut short) is no netns for the plugins.
      const mounted = await isNetnsMount(path);
      const ifname = record.ifname ?? "eth0";
      const prev = record.result ?? (mounted ? await addressesAsResult(path, ifname, record.config.cniVersion) : undefined);
      const rt = { containerId: record.containerId ?? id, netns: mounted ? path : "", ifname, pluginDirs: record.pluginDirs };
      try {
        await cniDel(record.config, rt, prev);
      } catch (err) {
        logger.warn("CNI DEL of a dead executor's network namespace failed; kept for the next prune", { netns: path, error: err });
        continue;
      }
    }
    await destroyNetns(path);
    await rm(`${path}.json`, { force: true });
    removed.push(`network namespace ${path}`);
  }
  return removed;
}
