import { InvalidArgumentError } from "../errors.js";
import { autoNetworkMode } from "../network/auto.js";
import { hostNetwork, noneNetwork } from "../network/basic.js";
import { BridgeProvider } from "../network/bridge.js";
import type { NetworkProvider } from "../network/types.js";
import type { Logger } from "../util/logger.js";
import type { ResolvedOptions } from "./options.js";
import type { NetworkMode } from "./types.js";

/**
 * The executor's network providers by mode name: `host` and `none`, the caller's own, and the built-in CNI
 * `bridge`, made on first use so that executors that never bridge never touch CNI.
 */
export class Networks {
  readonly #providers: Map<string, NetworkProvider>;
  readonly #options: ResolvedOptions;
  readonly #stateDir: string;
  readonly #namespace: string;
  readonly #logger: Logger;
  #bridge: Promise<NetworkProvider> | undefined;
  #defaultMode: Promise<string> | undefined;

  constructor(options: ResolvedOptions, stateDir: string, namespace: string) {
    this.#options = options;
    this.#stateDir = stateDir;
    this.#namespace = namespace;
    this.#logger = options.logger;
    this.#providers = new Map<string, NetworkProvider>([
      ["host", hostNetwork()],
      ["none", noneNetwork()],
      ...Object.entries(options.networkProviders),
    ]);
  }

  /** What `network: "default"` means (see ExecutorOptions.defaultNetwork). */
  defaultMode(): Promise<string> {
    this.#defaultMode ??= this.#options.defaultNetwork ? Promise.resolve(this.#options.defaultNetwork) : autoNetworkMode(this.#options.bridge);
    return this.#defaultMode;
  }

  /** The provider for a run's `network` (absent or "default": the default mode). */
  async provider(mode: NetworkMode | undefined): Promise<NetworkProvider> {
    const name = !mode || mode === "default" ? await this.defaultMode() : mode;
    const provider = this.#providers.get(name);
    if (provider) return provider;
    if (name === "bridge") {
      this.#bridge ??= BridgeProvider.create({
        ...this.#options.bridge,
        stateDir: this.#stateDir,
        namespace: this.#namespace,
        logger: this.#logger,
      }).catch((err: unknown) => {
        this.#bridge = undefined;
        throw err;
      });
      return this.#bridge;
    }
    throw new InvalidArgumentError(`unknown network mode ${name}; available: ${[...this.#providers.keys(), "bridge"].join(", ")}`, {
      field: "network",
    });
  }

  /** Closes every provider (each at most once, also when one serves two names). */
  async close(): Promise<void> {
    const bridge = await this.#bridge?.catch(() => undefined);
    for (const p of new Set([...this.#providers.values(), ...(bridge ? [bridge] : [])])) {
      await p.close().catch((err: unknown) => this.#logger.warn("closing a network provider failed", { error: err }));
    }
  }
}
