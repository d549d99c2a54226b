import { ARCH_SYSCALLS, BASE_SYSCALLS, CAPABILITY_SYSCALLS, PERSONALITY_VALUES } from "./seccomp-data.js";
import type { Seccomp, SeccompSyscall } from "./types.js";

const ARCHITECTURES: Readonly<Record<string, string[]>> = {
  x64: ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
  arm64: ["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"],
};

/** CLONE_NEWNS|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWCGROUP: clone may not make namespaces without CAP_SYS_ADMIN. */
export const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000 | 0x02000000;
const ENOSYS = 38;

function kernelAtLeast(release: string, major: number, minor: number): boolean {
  const m = /^(\d+)\.(\d+)/.exec(release);
  if (!m) return false;
  const [a, b] = [Number(m[1]), Number(m[2])];
  return a > major || (a === major && b >= minor);
}

/**
 * The default seccomp profile (containerd's and moby's) for a process with the given bounding capabilities,
 * on a Node `process.arch` and kernel release. Anything not allowed fails with EPERM; clone3 fails with
 * ENOSYS without CAP_SYS_ADMIN so that libcs fall back to clone, whose namespace flags are then filtered.
 */
export function defaultSeccompProfile(capabilities: readonly string[], arch: string, kernelRelease: string): Seccomp {
  const allow = (names: readonly string[]): SeccompSyscall => ({ names: [...names], action: "SCMP_ACT_ALLOW" });
  const syscalls: SeccompSyscall[] = [allow(BASE_SYSCALLS)];
  for (const value of PERSONALITY_VALUES) {
    syscalls.push({ names: ["personality"], action: "SCMP_ACT_ALLOW", args: [{ index: 0, value, op: "SCMP_CMP_EQ" }] });
  }
  if (kernelAtLeast(kernelRelease, 4, 8)) syscalls.push(allow(["ptrace"]));
  const archCalls = ARCH_SYSCALLS[arch];
  if (archCalls) syscalls.push(allow(archCalls));

  const caps = new Set(capabilities);
  for (const [cap, names] of Object.entries(CAPABILITY_SYSCALLS)) {
    if (caps.has(cap)) syscalls.push(allow(names));
  }
  if (!caps.has("CAP_SYS_ADMIN")) {
    syscalls.push({
      names: ["clone"],
      action: "SCMP_ACT_ALLOW",
      args: [{ index: arch === "s390x" ? 1 : 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }],
    });
    syscalls.push({ names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: ENOSYS });
  }
  return { defaultAction: "SCMP_ACT_ERRNO", architectures: [...(ARCHITECTURES[arch] ?? [])], syscalls };
}
