import { dirname, join } from "node:path";
import type { RootlessLayout } from "./layout.js";

/** The paths a rootless containerd's config names. */
export interface ContainerdConfigPaths {
  /** containerd's `root` (images, snapshots, content). */
  root: string;
  /** containerd's `state` (sockets of shims, runc state). */
  state: string;
  /** The gRPC socket; the ttrpc one is beside it with `.ttrpc` appended, as containerd's default names them. */
  address: string;
  /** The opt plugin's dir: its default, /opt/containerd, cannot be written by the user. */
  optDir: string;
}

/** The config's paths for a layout: the opt dir sits beside containerd's root, under the user's data dir. */
export function configPaths(layout: RootlessLayout): ContainerdConfigPaths {
  return {
    root: layout.containerdRoot,
    state: layout.containerdState,
    address: layout.address,
    optDir: join(dirname(layout.containerdRoot), "containerd-opt"),
  };
}

/**
 * A TOML basic string. TOML's rules: `"` and `\` are escaped, and so is every control character (U+0000-U+001F,
 * U+007F), which a basic string may not hold raw; everything else stands as itself (TOML is UTF-8).
 */
export function tomlString(value: string): string {
  const short: Record<string, string> = { '"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r" };
  // biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point: TOML forbids them raw.
  const escaped = value.replace(/["\\\u0000-\u001f\u007f]/g, (c) => short[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return `"${escaped}"`;
}

/**
 * The rootless containerd's config (version 2, containerd 1.6+). CRI is disabled: it is not used and only warns
 * when it cannot watch /etc/cni/net.d as a user. `[cgroup] path = ""` keeps containerd from putting itself and
 * its shims in a cgroup it may not create (cgroup v1 gives a user none).
 */
export function containerdConfig(paths: ContainerdConfigPaths): string {
  return [
    "# Written by ctrexec rootless start; rewritten at every start.",
    "version = 2",
    `root = ${tomlString(paths.root)}`,
    `state = ${tomlString(paths.state)}`,
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    "",
    "[grpc]",
    `  address = ${tomlString(paths.address)}`,
    "",
    "[ttrpc]",
    `  address = ${tomlString(`${paths.address}.ttrpc`)}`,
    "",
    "[cgroup]",
    '  path = ""',
    "",
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${tomlString(paths.optDir)}`,
    "",
  ].join("\n");
}
