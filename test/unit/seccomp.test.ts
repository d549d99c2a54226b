import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DEFAULT_CAPABILITIES } from "../../src/oci/defaults.js";
import { CLONE_NAMESPACE_FLAGS, defaultSeccompProfile } from "../../src/oci/seccomp.js";

const allowed = (p: ReturnType<typeof defaultSeccompProfile>) =>
  new Set(p.syscalls!.filter((s) => s.action === "SCMP_ACT_ALLOW" && !s.args).flatMap((s) => s.names));

describe("default seccomp profile", () => {
  const p = defaultSeccompProfile(DEFAULT_CAPABILITIES, "x64", "6.1.0");

  it("denies by default with EPERM and lists the x86 architectures", () => {
    assert.equal(p.defaultAction, "SCMP_ACT_ERRNO");
    assert.equal(p.defaultErrnoRet, undefined);
    assert.deepEqual(p.architectures, ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]);
    assert.deepEqual(defaultSeccompProfile([], "arm64", "6.1.0").architectures, ["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"]);
  });

  it("allows ordinary syscalls and denies privileged ones without the capability", () => {
    const a = allowed(p);
    for (const s of ["read", "write", "openat", "execve", "futex", "arch_prctl", "chroot", "ptrace"]) assert.ok(a.has(s), s);
    for (const s of ["mount", "unshare", "setns", "reboot", "init_module", "bpf", "kexec_load"]) assert.ok(!a.has(s), s);
  });

  it("filters clone's namespace flags and answers clone3 with ENOSYS without CAP_SYS_ADMIN", () => {
    const clone = p.syscalls!.find((s) => s.names.includes("clone") && s.args);
    assert.deepEqual(clone!.args, [{ index: 0, value: CLONE_NAMESPACE_FLAGS, valueTwo: 0, op: "SCMP_CMP_MASKED_EQ" }]);
    assert.equal(CLONE_NAMESPACE_FLAGS, 0x7e020000);
    assert.deepEqual(
      p.syscalls!.find((s) => s.names.includes("clone3")),
      { names: ["clone3"], action: "SCMP_ACT_ERRNO", errnoRet: 38 },
    );
  });

  it("adds the syscalls of each capability held", () => {
    const admin = allowed(defaultSeccompProfile([...DEFAULT_CAPABILITIES, "CAP_SYS_ADMIN", "CAP_SYS_BOOT"], "x64", "6.1.0"));
    for (const s of ["mount", "unshare", "setns", "clone", "clone3", "reboot"]) assert.ok(admin.has(s), s);
  });

  it("allows personality only for the known personas, and ptrace only from Linux 4.8", () => {
    const values = p.syscalls!.filter((s) => s.names[0] === "personality").map((s) => s.args![0]!.value);
    assert.deepEqual(values, [0, 8, 0x20000, 0x20008, 0xffffffff]);
    assert.ok(!allowed(defaultSeccompProfile(DEFAULT_CAPABILITIES, "x64", "4.4.0")).has("ptrace"));
  });
});
