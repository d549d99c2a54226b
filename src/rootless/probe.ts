import { closeSync, openSync, statSync } from "node:fs";
import { ContainerdClient } from "../containerd/index.js";
import { findOnPath } from "./preflight.js";
import type { NetworkProbe } from "./rootlesskit-args.js";

/** A Version call of a status or of the wait for a start: the daemon is local, an answer is quick or never. */
export const PROBE_MS = 2_000;

/** containerd's version, or undefined when nothing answers on `address` within `ms`. */
export async function daemonVersion(address: string, ms: number): Promise<string | undefined> {
  const client = new ContainerdClient({ address, timeoutMs: ms });
  try {
    return (await client.version({ timeoutMs: ms })).version;
  } catch {
    return undefined;
  } finally {
    await client.close();
  }
}

/** /dev/net/tun and slirp4netns as they are for this user now (opening the device creates nothing). */
export function probeNetwork(env: NodeJS.ProcessEnv): NetworkProbe {
  let tunOpens = false;
  let tunMode: string | undefined;
  try {
    const st = statSync("/dev/net/tun");
    tunMode = `mode ${(st.mode & 0o777).toString(8)}, owner uid ${st.uid}`;
    closeSync(openSync("/dev/net/tun", "r+"));
    tunOpens = true;
  } catch {}
  return { tunOpens, tunMode, slirpInstalled: findOnPath("slirp4netns", env) !== undefined };
}
