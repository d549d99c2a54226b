import { existsSync, readdirSync, readFileSync } from "node:fs";
import { release } from "node:os";
import { inUserNamespace } from "../util/user-namespace.js";
import { capabilitiesFromMask } from "./capabilities.js";

/** What the host offers that a spec depends on. Detected once; tests pass their own. */
export interface HostFeatures {
  /** cgroup v2 with cgroup namespaces (BuildKit enables the cgroupns only then: EINVAL on v1, #4108). */
  cgroupNamespaces: boolean;
  seccomp: boolean;
  apparmor: boolean;
  selinux: boolean;
  /** The capabilities of this process (CapBnd): what insecure mode can hand on. */
  capabilities: string[];
  inUserNamespace: boolean;
  /** Loop devices to offer in insecure mode are 0 … loopDevices+7. */
  loopDevices: number;
  arch: string;
  kernelRelease: string;
}

function read(path: string): string {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return "";
  }
}

let cached: HostFeatures | undefined;

export function detectHostFeatures(): HostFeatures {
  if (cached) return cached;
  const status = read("/proc/self/status");
  const capBnd = /^CapBnd:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? "0";
  let loops = 0;
  try {
    loops = readdirSync("/sys/block").filter((d) => d.startsWith("loop")).length;
  } catch {
    // no /sys/block: 0
  }
  cached = {
    cgroupNamespaces: existsSync("/proc/self/ns/cgroup") && existsSync("/sys/fs/cgroup/cgroup.subtree_control"),
    seccomp: /^Seccomp:/m.test(status),
    apparmor: read("/sys/module/apparmor/parameters/enabled").trim().startsWith("Y"),
    selinux: existsSync("/sys/fs/selinux/enforce"),
    capabilities: capabilitiesFromMask(capBnd),
    inUserNamespace: inUserNamespace(),
    loopDevices: loops,
    arch: process.arch,
    kernelRelease: release(),
  };
  return cached;
}
