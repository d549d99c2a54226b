import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import fs, { renameSync, rmSync, symlinkSync } from "node:fs";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { getUser, MAX_FILE_ID, parseUidGid, processGids } from "../../src/oci/user.js";

const O_PATH = 0o10000000;

/**
 * Runs `fn` with fs.openSync watched (every importer of it sees the spy: syncBuiltinESMExports): records each
 * open's path and flags, and calls `onFirst` before the first one is made (a racer's move at that moment).
 */
function watchingOpens<T>(fn: () => T, onFirst?: () => void): { result: T | Error; opens: { path: string; flags: unknown }[] } {
  const real = fs.openSync;
  const opens: { path: string; flags: unknown }[] = [];
  fs.openSync = ((path: fs.PathLike, flags?: fs.OpenMode, mode?: fs.Mode | null) => {
    if (opens.length === 0) onFirst?.();
    opens.push({ path: String(path), flags });
    return real(path, flags ?? "r", mode);
  }) as typeof fs.openSync;
  syncBuiltinESMExports();
  try {
    return { result: fn(), opens };
  } catch (err) {
    return { result: err as Error, opens };
  } finally {
    fs.openSync = real;
    syncBuiltinESMExports();
  }
}

/** An open that is not O_PATH: one that reaches the file's driver (a device's open, a FIFO's reader count). */
const realOpen = (o: { flags: unknown }) => typeof o.flags !== "number" || (o.flags & O_PATH) === 0;

const PASSWD = `root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
user:x:1000:1000::/home/user:/bin/sh
1000:x:2000:2000:named like a number:/:/bin/sh
`;
const GROUP = `root:x:0:
daemon:x:1:
wheel:x:10:root,user
staff:x:50:user
nobody:x:65534:
user:x:1000:
`;

async function rootfsWith(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), "ctrexec-user-"));
  await mkdir(join(root, "etc"));
  for (const [name, content] of Object.entries(files)) await writeFile(join(root, "etc", name), content);
  return root;
}

describe("parseUidGid (fast path)", () => {
  it("parses uid:gid and root", () => {
    assert.deepEqual(parseUidGid("1:1"), { uid: 1, gid: 1 });
    assert.deepEqual(parseUidGid("root:root"), { uid: 0, gid: 0 });
    assert.deepEqual(parseUidGid(""), { uid: 0, gid: 0 });
  });
  it("leaves other forms to the lookup", () => {
    assert.equal(parseUidGid("1000"), undefined);
    assert.equal(parseUidGid("a:b"), undefined);
    assert.equal(parseUidGid("1:2:3"), undefined);
  });
  it("applies the lookup path's range 0-2147483647 (§12.27)", () => {
    assert.throws(() => parseUidGid("1:4294967295"), /uids and gids must be in range 0-2147483647/);
    assert.deepEqual(parseUidGid("2147483647:0"), { uid: 2147483647, gid: 0 });
  });
});

describe("getUser", () => {
  let root: string;
  const made: string[] = [];
  before(async () => {
    root = await rootfsWith({ passwd: PASSWD, group: GROUP });
    made.push(root);
  });
  after(async () => {
    for (const r of made) await rm(r, { recursive: true, force: true });
  });

  it("resolves names with their supplementary groups", async () => {
    assert.deepEqual(getUser(root, "user"), { uid: 1000, gid: 1000, additionalGids: [10, 50], home: "/home/user" });
    const r = getUser(root, "root");
    assert.deepEqual([r.uid, r.gid, r.additionalGids], [0, 0, [10]]);
  });

  it("takes an explicit group by name or number, without supplementary groups", async () => {
    assert.deepEqual(getUser(root, "daemon:daemon"), { uid: 1, gid: 1, additionalGids: [], home: "/usr/sbin" });
    assert.equal(getUser(root, "daemon:nobody").gid, 65534);
    assert.equal(getUser(root, "user:50").gid, 50);
    assert.deepEqual(getUser(root, "user:staff").additionalGids, []);
    assert.equal(getUser(root, "daemon:777").gid, 777);
  });

  it("treats a numeric user as a uid even if a user is named like it", async () => {
    const r = getUser(root, "1000");
    assert.equal(r.uid, 1000);
    assert.equal(r.gid, 1000);
  });

  it("gives a numeric user without an entry gid 0", async () => {
    const r = getUser(root, "4242");
    assert.deepEqual([r.uid, r.gid, r.additionalGids], [4242, 0, []]);
    assert.deepEqual(processGids(r), [0]);
  });

  it("puts the primary gid first in the process's groups", async () => {
    assert.deepEqual(processGids(getUser(root, "user")), [1000, 10, 50]);
  });

  it("reports unknown users and groups with libcontainer's words", async () => {
    assert.throws(
      () => getUser(root, "nosuchuser"),
      (e: unknown) => {
        assert.ok(e instanceof InvalidArgumentError);
        assert.equal(e.field, "user");
        assert.equal(e.message, "unable to find user nosuchuser: no matching entries in passwd file");
        return true;
      },
    );
    assert.throws(() => getUser(root, "root:nosuchgroup"), {
      message: "unable to find group nosuchgroup: no matching entries in group file",
    });
    assert.throws(() => getUser(root, "-1"), /uids and gids must be in range 0-2147483647/);
  });

  it("runs as root when /etc/passwd is missing and no user is given", async () => {
    const bare = await mkdtemp(join(tmpdir(), "ctrexec-user-"));
    made.push(bare);
    assert.deepEqual(getUser(bare, ""), { uid: 0, gid: 0, additionalGids: [], home: "/" });
    assert.throws(() => getUser(bare, "daemon"), /unable to find user daemon/);
    assert.equal(getUser(bare, "1000").uid, 1000);
  });

  it("reads /etc/passwd through symlinks inside the rootfs only", async () => {
    const r = await mkdtemp(join(tmpdir(), "ctrexec-user-"));
    made.push(r);
    await mkdir(join(r, "etc"));
    await symlink("/etc/passwd", join(r, "etc/passwd")); // would be the host's file if followed naively
    assert.throws(() => getUser(r, "daemon"), /unable to find user daemon/);
    await mkdir(join(r, "data"));
    await writeFile(join(r, "data/pw"), PASSWD);
    await rm(join(r, "etc/passwd"));
    await symlink("../../../data/pw", join(r, "etc/passwd"));
    assert.equal(getUser(r, "daemon").uid, 1);
  });

  it("ignores a FIFO or directory at /etc/passwd without blocking", async () => {
    const r = await mkdtemp(join(tmpdir(), "ctrexec-user-"));
    made.push(r);
    await mkdir(join(r, "etc"));
    execFileSync("mkfifo", [join(r, "etc/passwd")]);
    await mkdir(join(r, "etc/group"));
    assert.throws(() => getUser(r, "daemon"), /unable to find user daemon/);
    assert.equal(getUser(r, "").uid, 0);
  });

  it("never opens a device node or FIFO at /etc/passwd or /etc/group (only O_PATH, then fstat)", async () => {
    const r = await mkdtemp(join(tmpdir(), "ctrexec-user-"));
    made.push(r);
    await mkdir(join(r, "etc"));
    // /dev/null's numbers: harmless if this test fails, but a device all the same (an image could plant /dev/watchdog's).
    execFileSync("mknod", [join(r, "etc/passwd"), "c", "1", "3"]);
    execFileSync("mkfifo", [join(r, "etc/group")]);
    for (const spec of ["", "1000", "1000:1000", "daemon", "1000:staff"]) {
      const { opens } = watchingOpens(() => getUser(r, spec));
      assert.deepEqual(opens.filter(realOpen), [], `getUser(${JSON.stringify(spec)}) opened a non-regular file`);
    }
    assert.equal(getUser(r, "1000").uid, 1000, "a numeric user works without account files");
    assert.throws(() => getUser(r, "daemon"), /unable to find user daemon/);
  });

  for (const kind of ["absolute", "relative"] as const) {
    it(`never reads the host's files when /etc is swapped for a symlink out of the root during a lookup (${kind})`, async () => {
      const r = await mkdtemp(join(tmpdir(), "ctrexec-user-"));
      const outside = await mkdtemp(join(tmpdir(), "ctrexec-user-outside-"));
      made.push(r, outside);
      await mkdir(join(r, "etc"));
      await writeFile(join(r, "etc/passwd"), PASSWD);
      await writeFile(join(outside, "passwd"), "hostonly:x:4321:4321:planted outside the root:/:/bin/sh\n");
      await writeFile(join(outside, "group"), "hostgroup:x:4321:user\n");
      // The racer's move, at the moment the lookup starts opening files.
      const swap = () => {
        renameSync(join(r, "etc"), join(r, "etc.orig"));
        symlinkSync(kind === "absolute" ? outside : relative(r, outside), join(r, "etc"));
      };
      const { result, opens } = watchingOpens(() => getUser(r, "hostonly"), swap);
      assert.ok(result instanceof InvalidArgumentError, `the host's passwd was read: ${JSON.stringify(result)}`);
      assert.match(result.message, /unable to find user hostonly/);
      assert.deepEqual(opens.filter(realOpen), [], "opened a file by path");
      rmSync(join(r, "etc"));
      renameSync(join(r, "etc.orig"), join(r, "etc"));
      const second = watchingOpens(() => getUser(r, "0:hostgroup"), swap).result;
      assert.ok(second instanceof InvalidArgumentError, `the host's group file was read: ${JSON.stringify(second)}`);
      assert.match(second.message, /unable to find group hostgroup/);
    });
  }

  describe("ids read from the account files (item 12)", () => {
    const cases: [string, string][] = [
      ["abc", "not a number"],
      ["-1", "negative"],
      [String(MAX_FILE_ID + 1), "(uid_t)-1"],
      ["99999999999", "beyond 32 bits"],
      ["1.5", "not an integer"],
      ["", "empty"],
    ];
    for (const [bad, what] of cases) {
      it(`rejects a used uid or gid that is ${what} (${JSON.stringify(bad)}), naming the field and entry`, async () => {
        const r = await rootfsWith({
          passwd: `root:x:0:0::/:/bin/sh\nbaduid:x:${bad}:100::/:/bin/sh\nbadgid:x:100:${bad}::/:/bin/sh\nok:x:100:100::/:/bin/sh\n`,
          group: `root:x:0:\nbad:x:${bad}:ok\n`,
        });
        made.push(r);
        const check = (spec: string, re: RegExp) =>
          assert.throws(
            () => getUser(r, spec),
            (e: unknown) => e instanceof InvalidArgumentError && e.field === "user" && re.test(e.message),
          );
        check("baduid", /the uid of user "baduid" in \/etc\/passwd/);
        check("badgid", /the gid of user "badgid" in \/etc\/passwd/);
        check("ok", /the gid of group "bad" in \/etc\/group/); // a supplementary group of ok's
        check("ok:bad", /the gid of group "bad" in \/etc\/group/);
        // Entries that are not used do no harm.
        assert.deepEqual(getUser(r, "root"), { uid: 0, gid: 0, additionalGids: [], home: "/" });
        assert.equal(getUser(r, "100:root").uid, 100);
      });
    }
    it(`accepts ids up to ${MAX_FILE_ID} from the files (e.g. nfsnobody)`, async () => {
      const r = await rootfsWith({ passwd: `nfsnobody:x:${MAX_FILE_ID}:${MAX_FILE_ID}::/:/sbin/nologin\n`, group: "" });
      made.push(r);
      assert.deepEqual([getUser(r, "nfsnobody").uid, getUser(r, "nfsnobody").gid], [MAX_FILE_ID, MAX_FILE_ID]);
    });
  });

  it("refuses account files over 10 MiB, except for the default user", async () => {
    const big = await rootfsWith({ passwd: "x".repeat(10 * 1024 * 1024 + 1) });
    made.push(big);
    assert.throws(() => getUser(big, "foo"), /exceeds 10485760 bytes/);
    assert.equal(getUser(big, "").uid, 0);
  });
});
