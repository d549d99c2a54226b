import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it, type TestContext } from "node:test";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/errors.js";
import {
  type IdMapping,
  mountAsIds,
  mountFlagsOf,
  mountIdmapped,
  openUserNamespace,
  probeIdmap,
  type UserNamespace,
  withFsIds,
} from "../../src/fs/idmap.js";
import { mountAt, unmountDetached } from "../../src/fs/mount.js";
import { type MountInfo, mountPointsUnder, readMountinfo } from "../../src/fs/mountinfo.js";

/** The host id of the container's root: far from any real user's. */
const H = 0x2f00_0000;
const SIZE = 65536;
const mapping: IdMapping = { uidMap: [{ containerId: 0, hostId: H, size: SIZE }], gidMap: [{ containerId: 0, hostId: H, size: SIZE }] };

/**
 * A scratch dir (0755, so that a process of the mapped ids can reach below it), and on the test's end, pass or
 * fail: every mount below it detached, the user namespaces it opened closed, the dir removed; then no mount
 * may be left below it.
 */
function scratch(t: TestContext): { base: string; userns: () => Promise<UserNamespace> } {
  const base = realpathSync(mkdtempSync(join(tmpdir(), "ctrexec-idmap-")));
  chmodSync(base, 0o755);
  const opened: UserNamespace[] = [];
  t.after(async () => {
    for (const ns of opened) ns.close();
    for (const m of mountPointsUnder(base).reverse()) await unmountDetached(m).catch(() => {});
    const left = mountPointsUnder(base);
    // Never remove through a mount that stayed: it may reach files that are not the test's.
    if (left.length === 0) rmSync(base, { recursive: true, force: true });
    assert.deepEqual(left, [], "a mount was left");
  });
  return {
    base,
    userns: async () => {
      const ns = await openUserNamespace(mapping);
      opened.push(ns);
      return ns;
    },
  };
}

function mountOf(path: string): MountInfo {
  const m = readMountinfo().filter((x) => x.mountPoint === path);
  assert.ok(m.length > 0, `${path} is not a mount point`);
  return m[m.length - 1]!;
}

/** Children of any thread of this process, zombies included (they stay listed until reaped). */
function children(): string[] {
  return readdirSync("/proc/self/task").flatMap((t) => readFileSync(`/proc/self/task/${t}/children`, "utf8").split(" ").filter(Boolean));
}

/** The Uid (or Gid) line of a thread's status: real, effective, saved, fs. */
function ids(status: string, which: "Uid" | "Gid"): number[] {
  const line = status.split("\n").find((l) => l.startsWith(`${which}:`))!;
  return line.split(/\s+/).slice(1).map(Number);
}
const capEff = (status: string) => status.split("\n").find((l) => l.startsWith("CapEff:"));
const threadStatus = () => readFileSync("/proc/thread-self/status", "utf8");
const fsuid = () => ids(threadStatus(), "Uid")[3];
const fsgid = () => ids(threadStatus(), "Gid")[3];

/** Every thread of this process: fsuid and fsgid (and its capabilities, same as the main thread's). */
function allThreads(): { fsuid: number; fsgid: number; capEff: string | undefined }[] {
  return readdirSync("/proc/self/task").map((t) => {
    const s = readFileSync(`/proc/self/task/${t}/status`, "utf8");
    return { fsuid: ids(s, "Uid")[3]!, fsgid: ids(s, "Gid")[3]!, capEff: capEff(s) };
  });
}

/** `script` run by sh as the mapped root (host ids H:H). */
function asMappedRoot(script: string): { status: number | null; stdout: string; stderr: string } {
  return spawnSync("sh", ["-c", script], { uid: H, gid: H, encoding: "utf8" });
}

/** lower/ (root-owned file f) and rw/{upper,work}, on this ext4 /tmp, owned by host root as a snapshot's are. */
function layers(base: string, name: string): { lower: string; rw: string } {
  const lower = join(base, `${name}-lower`);
  const rw = join(base, `${name}-rw`);
  for (const d of [join(lower, "etc"), join(rw, "upper"), join(rw, "work")]) mkdirSync(d, { recursive: true });
  writeFileSync(join(lower, "f"), "lower\n", { mode: 0o644 });
  return { lower, rw };
}

/** USERNS.md's snapshot root: idmapped RO lower, idmapped RW parent of upper and work, and the overlay on them. */
async function idmappedOverlay(
  base: string,
  ns: UserNamespace,
  name: string,
  asIds: boolean,
): Promise<{ merged: string; lower: string; rw: string }> {
  const { lower, rw } = layers(base, name);
  const [l, r, merged] = ["l", "r", "m"].map((d) => join(base, `${name}-${d}`)) as [string, string, string];
  for (const d of [l, r, merged]) mkdirSync(d);
  await mountIdmapped(ns, lower, l, { readonly: true });
  await mountIdmapped(ns, rw, r);
  const overlay = { type: "overlay", source: "overlay", options: [`lowerdir=${l}`, `upperdir=${r}/upper`, `workdir=${r}/work`] };
  if (asIds) await mountAsIds({ uid: H, gid: H }, overlay, merged);
  else await mountAt(overlay, merged);
  return { merged, lower, rw };
}

describe("openUserNamespace", () => {
  it("gives the fd of a user namespace with the maps; the child that made it is reaped", async (t) => {
    const { userns } = scratch(t);
    const before = children();
    const ns = await userns();
    assert.match(readlinkSync(`/proc/self/fd/${ns.fd}`), /^user:\[\d+\]$/);
    assert.deepEqual(children(), before, "no child (or zombie) is left");
    // What the namespace's own processes see: nsenter joins it through the fd passed as its fd 3.
    const r = spawnSync("nsenter", ["--user=/proc/self/fd/3", "cat", "/proc/self/uid_map", "/proc/self/gid_map"], {
      stdio: ["ignore", "pipe", "pipe", ns.fd],
      encoding: "utf8",
    });
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(
      r.stdout
        .trim()
        .split("\n")
        .map((l) => l.trim().split(/\s+/).map(Number)),
      [
        [0, H, SIZE],
        [0, H, SIZE],
      ],
    );
  });

  it("leaves no child when many are opened at once, nor when the kernel refuses a map", async (t) => {
    const { userns } = scratch(t);
    const before = children();
    const all = await Promise.all(Array.from({ length: 8 }, () => userns()));
    assert.equal(new Set(all.map((n) => n.fd)).size, 8);
    const overlapping = { uidMap: [...mapping.uidMap, { containerId: 5, hostId: 1, size: 10 }], gidMap: mapping.gidMap };
    await assert.rejects(openUserNamespace(overlapping), (e: unknown) => e instanceof InvalidArgumentError && e.field === "uidMap");
    assert.deepEqual(children(), before);
  });

  it("checks the maps before anything is made", async () => {
    const bad: [IdMapping, string][] = [
      [{ uidMap: [], gidMap: mapping.gidMap }, "uidMap"],
      [{ uidMap: mapping.uidMap, gidMap: [{ containerId: 0, hostId: H, size: 0 }] }, "gidMap[0].size"],
      [{ uidMap: [{ containerId: -1, hostId: H, size: 1 }], gidMap: mapping.gidMap }, "uidMap[0].containerId"],
      [{ uidMap: [{ containerId: 0, hostId: 1.5, size: 1 }], gidMap: mapping.gidMap }, "uidMap[0].hostId"],
      [{ uidMap: [{ containerId: 0, hostId: 0xffff_fff0, size: 65536 }], gidMap: mapping.gidMap }, "uidMap[0].size"],
    ];
    for (const [m, field] of bad) {
      await assert.rejects(openUserNamespace(m), (e: unknown) => e instanceof InvalidArgumentError && e.field === field, field);
    }
  });

  it("close() is idempotent and the fd is refused afterwards", async () => {
    const ns = await openUserNamespace(mapping);
    const fd = ns.fd;
    ns.close();
    ns.close();
    assert.throws(() => ns.fd, FailedPreconditionError);
    assert.throws(() => fstatSync(fd), { code: "EBADF" });
  });
});

describe("mountIdmapped", () => {
  it("shows an ext4 dir's owners through the map, marks it idmapped, and readonly makes it EROFS", async (t) => {
    const { base, userns } = scratch(t);
    const src = join(base, "src");
    const dst = join(base, "dst");
    mkdirSync(src);
    mkdirSync(dst);
    writeFileSync(join(src, "root-file"), "r");
    writeFileSync(join(src, "user-file"), "u");
    chownSync(join(src, "user-file"), 1000, 1001);
    writeFileSync(join(src, "outside"), "o");
    chownSync(join(src, "outside"), SIZE + 5, SIZE + 5);
    const ns = await userns();
    await mountIdmapped(ns, src, dst, { readonly: true, nosuid: true, nodev: true });
    const st = (n: string) => statSync(join(dst, n));
    assert.deepEqual([st("root-file").uid, st("root-file").gid], [H, H]);
    assert.deepEqual([st("user-file").uid, st("user-file").gid], [H + 1000, H + 1001]);
    assert.equal(st("outside").uid, 65534, "an owner outside the map shows as the overflow id");
    const opts = mountOf(dst).options.split(",");
    for (const o of ["ro", "nosuid", "nodev", "idmapped"]) assert.ok(opts.includes(o), `${o} in ${opts}`);
    assert.ok(!opts.includes("noexec"));
    assert.throws(() => writeFileSync(join(dst, "new"), "x"), { code: "EROFS" });
    assert.equal(statSync(join(src, "root-file")).uid, 0, "the source is unchanged");
  });

  it("writes through a read-write idmapped mount land on disk as the container ids", async (t) => {
    const { base, userns } = scratch(t);
    const src = join(base, "src");
    const dst = join(base, "dst");
    mkdirSync(src);
    mkdirSync(dst);
    await mountIdmapped(await userns(), src, dst);
    const r = asMappedRoot(`echo hi > ${dst}/by-root && mkdir ${dst}/d`);
    assert.equal(r.status, 0, r.stderr);
    chownSync(join(dst, "d"), H + 1000, H + 1000);
    assert.equal(statSync(join(src, "by-root")).uid, 0);
    assert.equal(statSync(join(src, "d")).uid, 1000);
  });

  it("mounts a single file on a file", async (t) => {
    const { base, userns } = scratch(t);
    const src = join(base, "resolv.conf");
    const dst = join(base, "target-file");
    writeFileSync(src, "nameserver 127.0.0.1\n");
    writeFileSync(dst, "");
    await mountIdmapped(await userns(), src, dst, { readonly: true });
    assert.equal(statSync(dst).uid, H);
    assert.equal(readFileSync(dst, "utf8"), "nameserver 127.0.0.1\n");
    assert.ok(mountOf(dst).options.split(",").includes("idmapped"));
  });

  it("recursive takes the mounts below the source along, idmapped too", async (t) => {
    const { base, userns } = scratch(t);
    const src = join(base, "src");
    const sub = join(src, "sub");
    const dst = join(base, "dst");
    mkdirSync(sub, { recursive: true });
    mkdirSync(dst);
    await mountAt({ type: "tmpfs", source: "tmpfs", options: ["size=1m", "mode=0755"] }, sub);
    writeFileSync(join(sub, "f"), "in tmpfs");
    await mountIdmapped(await userns(), src, dst, { recursive: true });
    assert.equal(statSync(join(dst, "sub", "f")).uid, H);
    assert.ok(mountOf(join(dst, "sub")).options.split(",").includes("idmapped"));
  });

  it("refuses an overlay source with FailedPreconditionError naming the filesystem", async (t) => {
    const { base, userns } = scratch(t);
    const { lower, rw } = layers(base, "plain");
    const merged = join(base, "merged");
    const dst = join(base, "dst");
    mkdirSync(merged);
    mkdirSync(dst);
    await mountAt({ type: "overlay", source: "overlay", options: [`lowerdir=${lower}`, `upperdir=${rw}/upper`, `workdir=${rw}/work`] }, merged);
    await assert.rejects(
      mountIdmapped(await userns(), merged, dst),
      (e: unknown) =>
        e instanceof FailedPreconditionError && /\(overlay\) does not support idmapped mounts/.test(e.message) && e.message.includes(merged),
    );
    assert.deepEqual(mountPointsUnder(dst), [], "nothing was attached");
  });
});

describe("an overlay on idmapped layers (USERNS.md)", () => {
  it("mounted by mountAsIds as the mapped root: rw, and the mapped root's writes are on-disk 0 in the upper", async (t) => {
    const { base, userns } = scratch(t);
    const { merged, lower, rw } = await idmappedOverlay(base, await userns(), "as-ids", true);
    assert.equal(mountOf(merged).superOptions.split(",")[0], "rw");
    assert.equal(statSync(join(merged, "f")).uid, H, "the lower shows as the mapped root's");
    const r = asMappedRoot(`echo new > ${merged}/new && echo more >> ${merged}/f && mkdir ${merged}/etc/d && stat -c %u ${merged}/new`);
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout.trim(), String(H));
    for (const p of ["new", "f", "etc/d"]) assert.equal(statSync(join(rw, "upper", p)).uid, 0, `upper/${p} on disk`);
    assert.equal(readFileSync(join(lower, "f"), "utf8"), "lower\n", "the lower is unchanged");
  });

  it("mounted by host root (fsuid 0, unmapped on the upper) comes up read-only: the reason for mountAsIds", async (t) => {
    const { base, userns } = scratch(t);
    const { merged } = await idmappedOverlay(base, await userns(), "as-root", false);
    assert.equal(mountOf(merged).superOptions.split(",")[0], "ro");
    assert.throws(() => writeFileSync(join(merged, "x"), "x"), { code: "EROFS" });
  });

  it("leaves every threadpool thread with fsuid/fsgid 0 and its capabilities", async (t) => {
    const { base, userns } = scratch(t);
    const ns = await userns();
    const mainCaps = capEff(threadStatus());
    // More mounts at once than libuv has threads (4), so that several workers run one; every thread is checked.
    await Promise.all(["a", "b", "c", "d", "e", "f"].map((n) => idmappedOverlay(base, ns, n, true)));
    for (const th of allThreads()) assert.deepEqual(th, { fsuid: 0, fsgid: 0, capEff: mainCaps });
  });

  it("refuses binds and bad ids", async () => {
    await assert.rejects(mountAsIds({ uid: H, gid: H }, { type: "bind", source: "/tmp", options: ["rbind"] }, "/nonexistent"), InvalidArgumentError);
    await assert.rejects(mountAsIds({ uid: -1, gid: H }, { type: "tmpfs", source: "tmpfs", options: [] }, "/nonexistent"), InvalidArgumentError);
  });
});

describe("withFsIds", () => {
  it("lets this thread create through the overlay as the mapped root (on-disk 0), which host root cannot", async (t) => {
    const { base, userns } = scratch(t);
    const { merged, rw } = await idmappedOverlay(base, await userns(), "fsids", true);
    assert.throws(() => mkdirSync(join(merged, "by-host-root")), { code: "EOVERFLOW" });
    const before = threadStatus();
    const seen = withFsIds({ uid: H, gid: H }, () => {
      mkdirSync(join(merged, "cwd"));
      writeFileSync(join(merged, "cwd", "f"), "x");
      return [fsuid(), fsgid(), capEff(threadStatus())];
    });
    assert.deepEqual(seen, [H, H, capEff(before)], "fn ran with the ids and the capabilities raised");
    assert.equal(statSync(join(rw, "upper", "cwd")).uid, 0);
    assert.equal(statSync(join(rw, "upper", "cwd", "f")).gid, 0);
    const after = threadStatus();
    assert.deepEqual([ids(after, "Uid"), ids(after, "Gid"), capEff(after)], [ids(before, "Uid"), ids(before, "Gid"), capEff(before)]);
  });

  it("puts the ids back when fn throws, and rethrows its error", () => {
    const before = threadStatus();
    const boom = new Error("boom");
    assert.throws(
      () =>
        withFsIds({ uid: H, gid: H }, () => {
          assert.equal(fsuid(), H);
          throw boom;
        }),
      (e: unknown) => e === boom,
    );
    const after = threadStatus();
    assert.deepEqual([fsuid(), fsgid(), capEff(after)], [0, 0, capEff(before)]);
  });

  it("refuses an async function (after it ran), with the ids back", async () => {
    let ranWith: number | undefined;
    assert.throws(
      () =>
        withFsIds({ uid: H, gid: H }, async () => {
          ranWith = fsuid();
        }),
      InvalidArgumentError,
    );
    assert.equal(ranWith, H);
    assert.equal(fsuid(), 0);
  });
});

describe("mountFlagsOf", () => {
  it("reads nosuid, nodev, noexec and ro from the mount a path is on", async (t) => {
    const { base } = scratch(t);
    const locked = join(base, "locked");
    const ro = join(base, "ro");
    mkdirSync(locked);
    mkdirSync(ro);
    await mountAt({ type: "tmpfs", source: "tmpfs", options: ["nosuid", "nodev", "noexec", "size=1m"] }, locked);
    mkdirSync(join(locked, "sub"));
    await mountAt({ type: "tmpfs", source: "tmpfs", options: ["ro", "size=1m"] }, ro);
    assert.deepEqual(mountFlagsOf(join(locked, "sub")), { readonly: false, nosuid: true, nodev: true, noexec: true });
    assert.deepEqual(mountFlagsOf(ro), { readonly: true, nosuid: false, nodev: false, noexec: false });
    assert.throws(() => mountFlagsOf(join(base, "missing")), { code: "ENOENT", syscall: "statvfs" });
  });
});

describe("probeIdmap", () => {
  it("is supported on ext4 (/tmp) and tmpfs, not on an overlay (with the reason), and says a path is missing", async (t) => {
    const { base } = scratch(t);
    const before = children();
    assert.deepEqual(await probeIdmap(base), { supported: true });
    const tmpfs = join(base, "tmpfs");
    mkdirSync(tmpfs);
    await mountAt({ type: "tmpfs", source: "tmpfs", options: ["size=1m"] }, tmpfs);
    assert.deepEqual(await probeIdmap(tmpfs), { supported: true });
    const { lower, rw } = layers(base, "probe");
    const merged = join(base, "merged");
    mkdirSync(merged);
    await mountAt({ type: "overlay", source: "overlay", options: [`lowerdir=${lower}`, `upperdir=${rw}/upper`, `workdir=${rw}/work`] }, merged);
    const mountsBefore = mountPointsUnder(base);
    assert.deepEqual(await probeIdmap(join(merged, "etc")), {
      supported: false,
      errno: "EINVAL",
      reason: `the filesystem at ${join(merged, "etc")} (overlay) does not support idmapped mounts, or ${join(merged, "etc")} is on an idmapped mount already`,
    });
    const missing = await probeIdmap(join(base, "missing"));
    assert.equal(missing.supported, false);
    assert.equal(!missing.supported && missing.errno, "ENOENT");
    assert.deepEqual(mountPointsUnder(base), mountsBefore, "the probe attaches nothing");
    assert.deepEqual(children(), before);
  });
});
