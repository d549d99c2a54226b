import { DEFAULT_CNI_CONFIG_DIR, DEFAULT_NETWORK_NAME } from "./bridge.js";
import { DEFAULT_PLUGIN_DIRS, findPlugin, loadNetworkConfig } from "./cni.js";

/**
 * BuildKit's "auto": bridge networking when the CNI plugins are installed and the bridge network's config
 * exists (scripts/setup.sh writes /etc/cni/net.d/ctrexec.conflist), otherwise the host's network.
 */
export async function autoNetworkMode(
  o: { pluginDirs?: readonly string[] | undefined; configDir?: string | undefined; networkName?: string | undefined } = {},
): Promise<"bridge" | "host"> {
  try {
    for (const t of ["bridge", "host-local", "loopback"]) await findPlugin(t, o.pluginDirs ?? DEFAULT_PLUGIN_DIRS);
    const conf = await loadNetworkConfig(o.configDir ?? DEFAULT_CNI_CONFIG_DIR, o.networkName ?? DEFAULT_NETWORK_NAME);
    return conf ? "bridge" : "host";
  } catch {
    return "host";
  }
}
