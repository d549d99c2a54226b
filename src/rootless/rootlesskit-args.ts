import { FailedPreconditionError, InvalidArgumentError } from "../errors.js";

export type RootlessNetwork = "host" | "slirp4netns";
export type NetworkRequest = "auto" | RootlessNetwork;

/** What decides the network: probed on the host by default, injected by tests. */
export interface NetworkProbe {
  /** /dev/net/tun opens read-write for this user: slirp4netns creates its tap device through it. */
  tunOpens: boolean;
  /** slirp4netns is on PATH. */
  slirpInstalled: boolean;
  /** For messages: /dev/net/tun's mode and owner, e.g. "600 root:root". */
  tunMode?: string | undefined;
}

export interface NetworkChoice {
  network: RootlessNetwork;
  /** Why, in words for the log. */
  reason: string;
}

export function parseNetworkRequest(value: unknown): NetworkRequest {
  if (value === undefined) return "auto";
  if (value === "auto" || value === "host" || value === "slirp4netns") return value;
  throw new InvalidArgumentError(`network must be "auto", "host" or "slirp4netns", not ${JSON.stringify(value)}`, { field: "network" });
}

const TUN_HINT =
  "an administrator may allow it (chmod 0666 /dev/net/tun, or a udev rule; scripts/setup-rootless.sh prints both), or start with network host";

/**
 * slirp4netns when it can work (the container network is then rootlesskit's own, and the host's loopback stays
 * out of reach), else the host's network: without /dev/net/tun slirp4netns fails at its first step.
 * An explicit request that cannot work is refused here rather than by rootlesskit's log.
 */
export function chooseNetwork(request: NetworkRequest, probe: NetworkProbe): NetworkChoice {
  const tun = `/dev/net/tun${probe.tunMode ? ` (${probe.tunMode})` : ""}`;
  if (request === "host") return { network: "host", reason: "network host was asked for" };
  if (request === "slirp4netns") {
    if (!probe.slirpInstalled) {
      throw new FailedPreconditionError("network slirp4netns: slirp4netns is not installed; run scripts/setup-rootless.sh <user> as root");
    }
    if (!probe.tunOpens) throw new FailedPreconditionError(`network slirp4netns needs ${tun} opened by this user, which it cannot: ${TUN_HINT}`);
    return { network: "slirp4netns", reason: "network slirp4netns was asked for" };
  }
  if (!probe.slirpInstalled) return { network: "host", reason: "slirp4netns is not installed, so the host network is used" };
  if (!probe.tunOpens) return { network: "host", reason: `this user cannot open ${tun}, which slirp4netns needs, so the host network is used` };
  return { network: "slirp4netns", reason: "/dev/net/tun opens and slirp4netns is installed" };
}

/**
 * The script rootlesskit runs inside its namespaces, as root there. Shims and runc keep their sockets and state
 * under /run/containerd whatever containerd's config says, and containerd's defaults live under
 * /var/lib/containerd: both get the user's own dirs bound on them. --copy-up made /run and /var/lib tmpfs copies
 * whose entries are symlinks to the host's; only such a symlink is removed (never a real dir: that would be the
 * host's). Paths come as arguments ($1 state, $2 root, $3 config), never spliced into the script. One line, as
 * it shows in ps and in rootlesskit's errors.
 */
export const IN_NAMESPACE_SCRIPT =
  'state="$1" root="$2" config="$3"; ' +
  'for d in /run/containerd /var/lib/containerd; do if [ -L "$d" ]; then rm "$d"; fi; mkdir -p "$d"; done; ' +
  'mount --bind "$state" /run/containerd; mount --bind "$root" /var/lib/containerd; ' +
  'exec containerd --config "$config"';

export interface KitArgsInput {
  network: RootlessNetwork;
  /** rootlesskit's --state-dir. */
  stateDir: string;
  /** containerd's state and root dirs (bound on /run/containerd and /var/lib/containerd) and its config. */
  containerdState: string;
  containerdRoot: string;
  configFile: string;
}

/** slirp4netns as rootless nerdctl runs it: an MTU that slirp handles fast, sandboxed, host loopback out of reach. */
const SLIRP_ARGS = [
  "--net=slirp4netns",
  "--mtu=65520",
  "--slirp4netns-sandbox=auto",
  "--slirp4netns-seccomp=auto",
  "--disable-host-loopback",
  "--port-driver=builtin",
];

/** The in-namespace script's $0: what tells a rootlesskit ctrexec started from rootless nerdctl's (same state dir). */
export const IN_NAMESPACE_NAME = "ctrexec-rootless-containerd";

/**
 * rootlesskit's arguments. --pidns: the child is init of a new pid namespace, so when rootlesskit goes, every
 * shim and container goes with it (without it the shims outlive the daemon). --propagation=rslave, as rootless
 * nerdctl: no mount made inside propagates out to the host. $0 of the script names it in ps.
 */

export function rootlesskitArgs(input: KitArgsInput): string[] {
  return [
    `--state-dir=${input.stateDir}`,
    ...(input.network === "host" ? ["--net=host"] : SLIRP_ARGS),
    "--copy-up=/etc",
    "--copy-up=/run",
    "--copy-up=/var/lib",
    "--propagation=rslave",
    "--pidns",
    "--",
    "sh",
    "-euc",
    IN_NAMESPACE_SCRIPT,
    IN_NAMESPACE_NAME,
    input.containerdState,
    input.containerdRoot,
    input.configFile,
  ];
}
