import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { execFileSync } from "node:child_process";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { getUser, parseUidGid, processGids } from "../../src/oci/user.js";

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
    assert.throws(() => getUser(root, "nosuchuser"), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.field, "user");
      assert.equal(e.message, "unable to find user nosuchuser: no matching entries in passwd file");
      return true;
    });
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

  it("refuses account files over 10 MiB, except for the default user", async () => {
    const big = await rootfsWith({ passwd: "x".repeat(10 * 1024 * 1024 + 1) });
    made.push(big);
    assert.throws(() => getUser(big, "foo"), /exceeds 10485760 bytes/);
    assert.equal(getUser(big, "").uid, 0);
  });
});
