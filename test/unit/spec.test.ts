import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { capabilityMask } from "../../src/oci/capabilities.js";
import type { HostFeatures } from "../../src/oci/host-features.js";
import { bindMount, type SourceMountFlags, tmpfsMount, withLockedFlags } from "../../src/oci/mounts.js";
import { serializeSpec } from "../../src/oci/serialize.js";
import { generateSpec, mergeEnv, RLIM_INFINITY, type SpecInput, validateMountStrings } from "../../src/oci/spec.js";
import type { Mount } from "../../src/oci/types.js";
import { rangeMapping } from "../../src/oci/userns.js";

const host: HostFeatures = {
  cgroupNamespaces: false,
  seccomp: true,
  apparmor: false,
  selinux: false,
  capabilities: ["CAP_CHOWN", "CAP_SYS_ADMIN", "CAP_NET_ADMIN", "CAP_MKNOD"],
  inUserNamespace: false,
  loopDevices: 2,
  arch: "x64",
  kernelRelease: "6.1.0",
};

const base: SpecInput = {
  id: "c1",
  namespace: "ns",
  args: ["sh", "-c", "true"],
  user: { uid: 0, gid: 0, additionalGids: [] },
  resolvConfPath: "/state/resolv.conf",
  hostsPath: "/state/hosts",
};

const DEFAULT_MOUNTS = [
  ["/proc", "proc", "proc", ["nosuid", "noexec", "nodev"]],
  ["/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k"]],
  ["/dev/pts", "devpts", "devpts", ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]],
  ["/dev/shm", "tmpfs", "shm", ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]],
  ["/dev/mqueue", "mqueue", "mqueue", ["nosuid", "noexec", "nodev"]],
  ["/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", "ro"]],
  ["/etc/resolv.conf", "bind", "/state/resolv.conf", ["nosuid", "noexec", "nodev", "rbind", "ro"]],
  ["/etc/hosts", "bind", "/state/hosts", ["nosuid", "noexec", "nodev", "rbind", "ro"]],
  ["/sys/fs/cgroup", "cgroup", "cgroup", ["ro", "nosuid", "noexec", "nodev"]],
];

const mountRows = (s: ReturnType<typeof generateSpec>) => s.mounts!.map((m) => [m.destination, m.type, m.source, m.options]);

describe("generateSpec: golden default spec", () => {
  it("sandbox: containerd's defaults with BuildKit's adjustments", () => {
    const s = generateSpec(base, host);
    const p = s.process!;
    assert.equal(capabilityMask(p.capabilities!.effective!), "00000000a80425fb");
    assert.deepEqual(p.capabilities!.bounding, p.capabilities!.effective);
    assert.deepEqual(p.capabilities!.permitted, p.capabilities!.effective);
    assert.equal(p.capabilities!.inheritable, undefined);
    assert.equal(p.capabilities!.ambient, undefined);
    assert.deepEqual(s.linux!.maskedPaths, [
      "/proc/acpi",
      "/proc/asound",
      "/proc/kcore",
      "/proc/keys",
      "/proc/latency_stats",
      "/proc/timer_list",
      "/proc/timer_stats",
      "/proc/sched_debug",
      "/sys/firmware",
      "/sys/devices/virtual/powercap",
      "/proc/scsi",
    ]);
    assert.deepEqual(s.linux!.readonlyPaths, ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]);
    assert.deepEqual(mountRows(s), DEFAULT_MOUNTS);
    assert.deepEqual(
      s.linux!.namespaces!.map((n) => n.type),
      ["pid", "ipc", "uts", "mount", "network"],
    );
    assert.deepEqual(s.linux!.resources!.devices, [{ allow: false, access: "rwm" }]);
    assert.equal(s.linux!.cgroupsPath, "/ns/c1");
    assert.equal(p.rlimits, undefined, "rlimits are inherited unless ulimits are given");
    assert.equal(p.noNewPrivileges, false);
    assert.equal(p.terminal, false);
    assert.equal(p.cwd, "/");
    assert.deepEqual(p.user, { uid: 0, gid: 0, additionalGids: [0] });
    assert.equal(s.hostname, "ctrexec");
    assert.deepEqual(p.env, ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]);
    assert.equal(s.linux!.seccomp!.defaultAction, "SCMP_ACT_ERRNO");
    assert.equal(s.root!.readonly, undefined);
    assert.equal(s.linux!.devices, undefined);
  });

  it("insecure: every capability we hold, no masks, no seccomp, all devices, writable cgroup and sysfs", () => {
    const s = generateSpec({ ...base, security: "insecure" }, host);
    const caps = s.process!.capabilities!;
    for (const set of [caps.bounding, caps.effective, caps.inheritable, caps.permitted, caps.ambient]) {
      assert.deepEqual(set, host.capabilities);
    }
    assert.deepEqual(s.linux!.maskedPaths, []);
    assert.deepEqual(s.linux!.readonlyPaths, []);
    assert.equal(s.linux!.seccomp, undefined);
    assert.deepEqual(s.linux!.resources!.devices, [
      { allow: false, access: "rwm" },
      { allow: true, type: "c", access: "rwm" },
      { allow: true, type: "b", access: "rwm" },
    ]);
    const devs = s.linux!.devices!.map((d) => d.path);
    assert.deepEqual(devs.slice(0, 6), ["/dev/kmsg", "/dev/cuse", "/dev/fuse", "/dev/kvm", "/dev/net/tun", "/dev/loop-control"]);
    assert.deepEqual(
      devs.slice(6),
      Array.from({ length: 10 }, (_, i) => `/dev/loop${i}`),
    );
    const sys = s.mounts!.find((m) => m.destination === "/sys")!;
    const cg = s.mounts!.find((m) => m.destination === "/sys/fs/cgroup")!;
    assert.ok(sys.options!.includes("rw") && !sys.options!.includes("ro"));
    assert.ok(cg.options!.includes("rw") && !cg.options!.includes("ro"));
    assert.equal(generateSpec({ ...base, security: "insecure" }, { ...host, inUserNamespace: true }).linux!.devices, undefined);
  });
});

describe("generateSpec: options", () => {
  it("adds the cgroup namespace only where cgroup v2 namespaces exist", () => {
    assert.ok(!generateSpec(base, host).linux!.namespaces!.some((n) => n.type === "cgroup"));
    assert.ok(generateSpec(base, { ...host, cgroupNamespaces: true }).linux!.namespaces!.some((n) => n.type === "cgroup"));
  });

  it("places the cgroup under a parent, or under a systemd slice", () => {
    assert.equal(generateSpec({ ...base, cgroupParent: "builds" }, host).linux!.cgroupsPath, "/builds/ctrexec/c1");
    assert.equal(generateSpec({ ...base, cgroupParent: "/a/b/" }, host).linux!.cgroupsPath, "/a/b/ctrexec/c1");
    assert.equal(generateSpec({ ...base, cgroupParent: "system.slice:ctrexec:" }, host).linux!.cgroupsPath, "system.slice:ctrexec:c1");
  });

  it("maps ulimits to rlimits, -1 to an exact RLIM_INFINITY, and validates names", () => {
    const s = generateSpec(
      {
        ...base,
        ulimits: [
          { name: "nofile", soft: 1062, hard: 1062 },
          { name: "core", soft: -1, hard: -1 },
        ],
      },
      host,
    );
    assert.deepEqual(s.process!.rlimits, [
      { type: "RLIMIT_NOFILE", soft: 1062, hard: 1062 },
      { type: "RLIMIT_CORE", soft: RLIM_INFINITY, hard: RLIM_INFINITY },
    ]);
    assert.match(serializeSpec(s), /"type":"RLIMIT_CORE","soft":18446744073709551615,"hard":18446744073709551615/);
    const bad = (u: { name: string; soft: number; hard: number }) => () => generateSpec({ ...base, ulimits: [u] }, host);
    assert.throws(
      bad({ name: "nofiles", soft: 1, hard: 1 }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "ulimits" && /unknown ulimit name "nofiles"/.test(e.message),
    );
    assert.throws(bad({ name: "nofile", soft: 10, hard: 5 }), /soft limit 10 is above the hard limit 5/);
    assert.throws(bad({ name: "nofile", soft: -5, hard: 5 }), /not a limit/);
  });

  it("sets resources and validates them", () => {
    const s = generateSpec(
      {
        ...base,
        resources: { memory: 64 << 20, memorySwap: -1, cpuQuota: 50000, cpuPeriod: 100000, cpuShares: 512, cpusetCpus: "0-1", pidsLimit: 10 },
      },
      host,
    );
    assert.deepEqual(s.linux!.resources, {
      devices: [{ allow: false, access: "rwm" }],
      memory: { limit: 64 << 20, swap: -1 },
      cpu: { shares: 512, quota: 50000, period: 100000, cpus: "0-1" },
      pids: { limit: 10 },
    });
    assert.throws(() => generateSpec({ ...base, resources: { cpusetCpus: "0;rm" } }, host), /resources\.cpusetCpus/);
    assert.throws(() => generateSpec({ ...base, resources: { memory: -3 } }, host), /resources\.memory/);
  });

  it("merges env: last definition wins, a bare KEY unsets, PATH defaults", () => {
    assert.deepEqual(mergeEnv([], ["A=1", "B=2", "A=3", "B", "C="]), ["A=3", "C="]);
    const s = generateSpec({ ...base, env: ["PATH=/bin", "X=1", "X=2"] }, host);
    assert.deepEqual(s.process!.env, ["PATH=/bin", "X=2"]);
  });

  it("dedups mounts by destination in place: a tmpfs on /dev/shm replaces the default where it stood", () => {
    const shm = { destination: "/dev/shm", type: "tmpfs", source: "tmpfs", options: ["nosuid", "size=134217728"] };
    const s = generateSpec({ ...base, mounts: [{ destination: "/data", type: "bind", source: "/x", options: ["rbind"] }, shm] }, host);
    const dests = s.mounts!.map((m) => m.destination);
    assert.deepEqual(dests.slice(0, 5), ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue"]);
    assert.deepEqual(s.mounts![3], shm);
    assert.equal(dests.at(-1), "/data");
  });

  it("makes tmpfs and bind mounts as BuildKit does", () => {
    assert.deepEqual(tmpfsMount("/t", { size: 65536, readonly: true }), {
      destination: "/t",
      type: "tmpfs",
      source: "tmpfs",
      options: ["nosuid", "ro", "size=65536"],
    });
    assert.deepEqual(tmpfsMount("/t").options, ["nosuid"]);
    assert.throws(() => tmpfsMount("/t", { size: -1 }), /not a positive number of bytes/);
    assert.deepEqual(bindMount("/d", "/src", { readonly: true }).options, ["rbind", "ro"]);
  });

  it("uses the host network namespace, a new one, or one at a path", () => {
    const types = (n: SpecInput["network"]) => generateSpec({ ...base, network: n }, host).linux!.namespaces!;
    assert.ok(!types({ kind: "host" }).some((n) => n.type === "network"));
    assert.deepEqual(
      types({ kind: "path", path: "/run/netns/x" }).find((n) => n.type === "network"),
      { type: "network", path: "/run/netns/x" },
    );
  });

  it("sets tty, console size, hostname, cwd, read-only root and the user's groups", () => {
    const s = generateSpec(
      {
        ...base,
        terminal: true,
        consoleSize: { rows: 40, cols: 100 },
        hostname: "box",
        cwd: "/work",
        readonlyRootfs: true,
        user: { uid: 1000, gid: 1000, additionalGids: [10, 1000] },
      },
      host,
    );
    assert.equal(s.process!.terminal, true);
    assert.deepEqual(s.process!.consoleSize, { height: 40, width: 100 });
    assert.equal(s.hostname, "box");
    assert.equal(s.process!.cwd, "/work");
    assert.equal(s.root!.readonly, true);
    assert.deepEqual(s.process!.user, { uid: 1000, gid: 1000, additionalGids: [1000, 10] });
  });

  it("offers a trace socket with the OTEL env", () => {
    const s = generateSpec({ ...base, traceSocket: "/run/otel.sock" }, host);
    assert.deepEqual(s.mounts!.at(-1), { destination: "/dev/otel-grpc.sock", type: "bind", source: "/run/otel.sock", options: ["ro", "rbind"] });
    assert.ok(s.process!.env!.includes("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=unix:///dev/otel-grpc.sock"));
  });

  it("converts to rootless by path component: /sys mounts go, /sysroot stays", () => {
    const s = generateSpec({ ...base, rootless: true, mounts: [{ destination: "/sysroot", type: "bind", source: "/x", options: [] }] }, host);
    const dests = s.mounts!.map((m) => m.destination);
    assert.ok(!dests.includes("/sys") && !dests.includes("/sys/fs/cgroup"));
    assert.ok(dests.includes("/sysroot"));
    assert.equal(s.linux!.cgroupsPath, "");
    assert.equal(s.linux!.resources, undefined);
  });

  it("rejects bad input with typed errors naming the field", () => {
    const field = (input: Partial<SpecInput>, h: HostFeatures = host) => {
      try {
        generateSpec({ ...base, ...input } as SpecInput, h);
      } catch (e) {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        return e.field;
      }
      assert.fail("no error");
    };
    assert.equal(field({ security: "bogus" as "sandbox" }), "security");
    assert.equal(field({ mounts: [{ destination: "relative", type: "tmpfs" }] }), "mounts");
    assert.equal(field({ mounts: [{ destination: "/a/../b", type: "tmpfs" }] }), "mounts");
    assert.equal(field({ args: [] }), "args");
    assert.equal(field({ args: ["a\0b"] }), "args");
    assert.equal(field({ cwd: "rel" }), "cwd");
    assert.equal(field({ cwd: "/a\0b" }), "cwd");
    assert.equal(field({ hostname: "a b" }), "hostname");
    assert.equal(field({ selinux: { processLabel: "x" } }), "selinux");
    assert.equal(field({ apparmorProfile: "p" }), "apparmorProfile");
  });

  it("refuses what runc or the kernel would refuse only after the container exists, naming the field", () => {
    const field = (input: Partial<SpecInput>) => {
      try {
        generateSpec({ ...base, ...input } as SpecInput, host);
      } catch (e) {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        return e.field;
      }
      return undefined;
    };
    // The UTS name holds 64 bytes (HOST_NAME_MAX); /etc/hosts would take 253.
    assert.equal(field({ hostname: "h".repeat(64) }), undefined);
    assert.equal(field({ hostname: "h".repeat(65) }), "hostname");
    assert.equal(field({ hostname: `${"a".repeat(63)}.${"b".repeat(63)}` }), "hostname");
    // A winsize holds unsigned shorts; 0 rows is no terminal.
    assert.equal(field({ terminal: true, consoleSize: { rows: 24, cols: 80 } }), undefined);
    assert.equal(field({ terminal: true, consoleSize: { rows: 65535, cols: 1 } }), undefined);
    for (const bad of [
      { rows: 0, cols: 80 },
      { rows: 24, cols: 65536 },
      { rows: -1, cols: 80 },
      { rows: 2.5, cols: 80 },
      { rows: NaN, cols: 80 },
    ]) {
      assert.equal(field({ terminal: true, consoleSize: bad }), "consoleSize", JSON.stringify(bad));
    }
    // Absolute, relative and systemd parents, but never one that climbs with "..".
    for (const ok of ["/build", "build/steps", "system.slice:ctrexec:", "a..b/.x"]) assert.equal(field({ cgroupParent: ok }), undefined, ok);
    for (const bad of ["..", "/a/../../b", "a/..", "../x", "user.slice:..:", "a\0b"]) assert.equal(field({ cgroupParent: bad }), "cgroupParent", bad);
    // Mount strings are C strings to runc and mount(2): a NUL would cut them short.
    assert.equal(field({ mounts: [{ destination: "/a\0b", type: "tmpfs" }] }), "mounts");
    assert.equal(field({ mounts: [{ destination: "/a", type: "bind", source: "/x\0y", options: ["rbind"] }] }), "mounts");
    assert.equal(field({ mounts: [{ destination: "/a", type: "tmpfs", source: "tmpfs", options: ["size=1m\0,exec"] }] }), "mounts");
    assert.throws(() => validateMountStrings("/a", [{ type: "overlay", source: "overlay", options: ["lowerdir=/l\0"] }]), InvalidArgumentError);
    validateMountStrings("/a", [{ type: "overlay", source: "overlay", options: ["lowerdir=/l"] }]);
  });

  it("sets an AppArmor profile where the host has AppArmor", () => {
    assert.equal(generateSpec({ ...base, apparmorProfile: "p" }, { ...host, apparmor: true }).process!.apparmorProfile, "p");
  });
});

describe("generateSpec: a user namespace per run", () => {
  const userns = rangeMapping(0x10000000, 0x20000000);
  const sysBind = ["/sys", "bind", "/sys", ["rbind", "nosuid", "noexec", "nodev", "ro", "rro"]];

  it("adds the user namespace and the maps in OCI's shape, and changes nothing else with a fresh network namespace", () => {
    const plain = generateSpec(base, host);
    const s = generateSpec({ ...base, userns }, host);
    assert.deepEqual(
      s.linux!.namespaces!.map((n) => n.type),
      ["pid", "ipc", "uts", "mount", "network", "user"],
    );
    assert.deepEqual(s.linux!.uidMappings, [{ containerID: 0, hostID: 0x10000000, size: 65536 }]);
    assert.deepEqual(s.linux!.gidMappings, [{ containerID: 0, hostID: 0x20000000, size: 65536 }]);
    assert.deepEqual(mountRows(s), DEFAULT_MOUNTS, "a fresh sysfs: runc makes the network namespace inside the user namespace");
    delete s.linux!.uidMappings;
    delete s.linux!.gidMappings;
    s.linux!.namespaces = s.linux!.namespaces!.filter((n) => n.type !== "user");
    assert.deepEqual(s, plain);
  });

  it("leaves the spec without a user namespace when userns is unset", () => {
    for (const network of [{ kind: "host" }, { kind: "path", path: "/run/netns/x" }, undefined] as const) {
      const s = generateSpec({ ...base, network }, host);
      assert.ok(!s.linux!.namespaces!.some((n) => n.type === "user"));
      assert.equal(s.linux!.uidMappings, undefined);
      assert.equal(s.linux!.gidMappings, undefined);
      assert.deepEqual(mountRows(s), DEFAULT_MOUNTS);
    }
  });

  it("binds the host's /sys read-only when the network namespace is the host's or one the host made", () => {
    for (const network of [{ kind: "host" }, { kind: "path", path: "/run/netns/cni-1" }] as const) {
      const s = generateSpec({ ...base, userns, network }, host);
      const rows = mountRows(s);
      assert.deepEqual(rows[5], sysBind, network.kind);
      assert.ok(!rows.some((r) => r[1] === "sysfs"));
      assert.deepEqual(rows.slice(6), DEFAULT_MOUNTS.slice(6), "/sys/fs/cgroup and the rest stay");
    }
    // In insecure mode too: the host's sysfs is not the container's to write.
    assert.deepEqual(mountRows(generateSpec({ ...base, userns, network: { kind: "host" }, security: "insecure" }, host))[5], sysBind);
    // A mount of the caller's on /sys replaced the sysfs and is left as given.
    const own: Mount = { destination: "/sys", type: "bind", source: "/my/sys", options: ["rbind", "ro"] };
    const s = generateSpec({ ...base, userns, network: { kind: "host" }, mounts: [own] }, host);
    assert.deepEqual(
      s.mounts!.find((m) => m.destination === "/sys"),
      own,
    );
  });

  it("requires the process's user and every group to be mapped", () => {
    const narrow = { uidMap: [{ containerId: 0, hostId: 100000, size: 1000 }], gidMap: [{ containerId: 0, hostId: 100000, size: 1000 }] };
    const refused = (user: SpecInput["user"], m = userns) => {
      try {
        generateSpec({ ...base, userns: m, user }, host);
      } catch (e) {
        assert.ok(e instanceof InvalidArgumentError, String(e));
        assert.equal(e.field, "user");
        return e.message;
      }
      return undefined;
    };
    assert.equal(refused({ uid: 70000, gid: 0, additionalGids: [] }), "user 70000 is not mapped by the run's user namespace (0-65535)");
    assert.equal(refused({ uid: 0, gid: 65536, additionalGids: [] }), "group 65536 is not mapped by the run's user namespace (0-65535)");
    assert.equal(refused({ uid: 999, gid: 999, additionalGids: [10, 1000] }, narrow), "group 1000 is not mapped by the run's user namespace (0-999)");
    assert.equal(refused({ uid: 65535, gid: 65535, additionalGids: [0, 5] }), undefined);
    // Without a user namespace any id goes (the host's).
    generateSpec({ ...base, user: { uid: 70000, gid: 70000, additionalGids: [] } }, host);
  });

  it("checks the maps, naming the userns field", () => {
    assert.throws(
      () => generateSpec({ ...base, userns: { uidMap: [{ containerId: 1, hostId: 100000, size: 10 }], gidMap: userns.gidMap } }, host),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "userns" && /container uid 0/.test(e.message),
    );
    assert.throws(
      () => generateSpec({ ...base, userns: { uidMap: userns.uidMap, gidMap: [] } }, host),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "userns",
    );
  });

  it("refuses a user namespace per run with rootless, which has one already", () => {
    assert.throws(
      () => generateSpec({ ...base, userns, rootless: true }, host),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "userns" && /needs a root containerd; rootless already/.test(e.message),
    );
  });

  it("drops devpts' gid=5 only when container gid 5 is not mapped", () => {
    const devpts = (m: typeof userns) => generateSpec({ ...base, userns: m }, host).mounts!.find((x) => x.destination === "/dev/pts")!.options;
    assert.ok(devpts(userns)!.includes("gid=5"));
    const no5 = {
      uidMap: userns.uidMap,
      gidMap: [
        { containerId: 0, hostId: 100000, size: 5 },
        { containerId: 6, hostId: 100006, size: 100 },
      ],
    };
    assert.deepEqual(devpts(no5), ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]);
  });

  it("adds no device nodes in insecure mode (runc would bind them from the host)", () => {
    const s = generateSpec({ ...base, userns, security: "insecure" }, host);
    assert.equal(s.linux!.devices, undefined);
    assert.equal(s.linux!.resources!.devices!.length, 3, "the device cgroup still allows them");
  });
});

describe("withLockedFlags", () => {
  const none: SourceMountFlags = { readonly: false, nosuid: false, nodev: false, noexec: false };
  const flags: Record<string, SourceMountFlags> = {
    "/tmpfs-locked": { readonly: false, nosuid: true, nodev: true, noexec: true },
    "/ro-src": { ...none, readonly: true },
    "/plain": none,
    "/all": { readonly: true, nosuid: true, nodev: true, noexec: true },
  };
  const flagsOf = (source: string) => flags[source];

  it("appends the source mount's locked flags to every bind mount, once", () => {
    const mounts: Mount[] = [
      { destination: "/a", type: "bind", source: "/tmpfs-locked", options: ["rbind", "ro"] },
      { destination: "/b", source: "/tmpfs-locked", options: ["rbind", "nosuid"] },
      { destination: "/c", type: "none", source: "/ro-src", options: ["bind"] },
      { destination: "/d", type: "bind", source: "/plain", options: ["rbind"] },
      { destination: "/e", type: "bind", source: "/all", options: ["nosuid", "noexec", "nodev", "rbind", "ro"] },
      { destination: "/f", type: "bind", source: "/all" },
    ];
    const before = structuredClone(mounts);
    const out = withLockedFlags(mounts, flagsOf);
    assert.deepEqual(mounts, before, "the input is not changed");
    assert.deepEqual(
      out.map((m) => m.options),
      [
        ["rbind", "ro", "nosuid", "nodev", "noexec"],
        ["rbind", "nosuid", "nodev", "noexec"],
        ["bind", "ro"],
        ["rbind"],
        ["nosuid", "noexec", "nodev", "rbind", "ro"],
        ["ro", "nosuid", "nodev", "noexec"],
      ],
    );
    assert.equal(out[3], mounts[3], "an unchanged mount is returned as it is");
  });

  it("appends ro after an explicit rw, as BuildKit does (the later option wins in runc)", () => {
    const [m] = withLockedFlags([{ destination: "/x", type: "bind", source: "/ro-src", options: ["rbind", "rw"] }], flagsOf);
    assert.deepEqual(m!.options, ["rbind", "rw", "ro"]);
  });

  it("leaves other mounts, and binds whose source it cannot tell, alone", () => {
    const mounts: Mount[] = [
      { destination: "/t", type: "tmpfs", source: "/tmpfs-locked", options: ["nosuid"] },
      { destination: "/cg", type: "cgroup", source: "cgroup", options: ["ro"] },
      { destination: "/u", type: "bind", source: "/unknown", options: ["rbind"] },
      { destination: "/n", type: "bind", options: ["rbind"] },
    ];
    const asked: string[] = [];
    const out = withLockedFlags(mounts, (src) => {
      asked.push(src);
      return flagsOf(src);
    });
    assert.deepEqual(out, mounts);
    assert.deepEqual(asked, ["/unknown"]);
  });

  it("fixes up a userns spec's generated binds (resolv.conf, hosts, /sys)", () => {
    const s = generateSpec({ ...base, userns: rangeMapping(0x10000000, 0x10000000), network: { kind: "host" } }, host);
    const out = withLockedFlags(s.mounts!, () => ({ readonly: true, nosuid: true, nodev: true, noexec: true }));
    // Their options already say all four: nothing to add.
    assert.deepEqual(out, s.mounts);
    const out2 = withLockedFlags(s.mounts!, () => ({ ...none, noexec: true }));
    assert.deepEqual(out2, s.mounts);
  });
});
