import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/errors.js";
import {
  checkAgainstAccounts,
  claimMapping,
  claimRange,
  DEFAULT_POOL,
  delegatedOverlap,
  describeOverlap,
  listRanges,
  pruneRanges,
  type RangeClaim,
  type ResolvedPools,
  resolvePools,
} from "../../src/executor/userns-ranges.js";
import { type Logger, silentLogger } from "../../src/util/logger.js";
import { ownerId } from "../../src/util/owner.js";

const rangesModule = fileURLToPath(new URL("../../src/executor/userns-ranges.js", import.meta.url));
const R = 65536;

let top: string;
let n = 0;
/** A fresh state dir for one test. */
function stateDir(): string {
  const d = join(top, `state${n++}`);
  mkdirSync(d);
  return d;
}
const run = (id: string, runDir = join(top, "no-such-run-dir", id)) => ({ namespace: "h2-test", id, runDir });

/** [start, end) intervals overlap? */
function disjoint(ranges: [number, number][]): boolean {
  const s = [...ranges].sort((a, b) => a[0] - b[0]);
  return s.every((r, i) => i === 0 || s[i - 1]![0] + s[i - 1]![1] <= r[0]);
}

/** A logger that keeps its lines. */
function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  const log = (m: string) => lines.push(m);
  return { lines, debug: log, info: log, warn: log, error: log };
}

/**
 * A node process that claims `count` ranges against the compiled module once told "go" on stdin, prints them
 * as one JSON line, and then exits or, with `hold`, stays until killed. Lines are awaited, never times.
 */
class Claimer {
  readonly child: ChildProcess;
  private out = "";
  private waiters: { test: (line: string) => boolean; resolve: (line: string) => void; reject: (e: Error) => void }[] = [];
  readonly exited: Promise<void>;

  constructor(state: string, pools: ResolvedPools, count: number, runDirBase: string, hold: boolean) {
    const script = `
      const m = await import(${JSON.stringify(rangesModule)});
      const [state, pools, count, base, hold] = process.argv.slice(1);
      const silent = { debug() {}, info() {}, warn() {}, error() {} };
      process.stdout.write("ready\\n");
      await new Promise((r) => process.stdin.once("data", r));
      const out = [];
      for (let i = 0; i < Number(count); i++) {
        const c = m.claimRange(state, JSON.parse(pools), { namespace: "h2-test", id: "c" + process.pid + "-" + i, runDir: base + "/" + i }, silent);
        out.push([c.uidStart, c.gidStart, c.size]);
      }
      process.stdout.write(JSON.stringify(out) + "\\n");
      if (hold === "hold") setInterval(() => {}, 1 << 30);
      else process.exit(0);`;
    this.child = spawn(
      process.execPath,
      ["--input-type=module", "-e", script, state, JSON.stringify(pools), String(count), runDirBase, hold ? "hold" : "exit"],
      {
        stdio: ["pipe", "pipe", "inherit"],
      },
    );
    this.child.stdout!.setEncoding("utf8");
    this.child.stdout!.on("data", (d: string) => {
      this.out += d;
      this.check();
    });
    this.exited = new Promise((resolve) => this.child.once("exit", () => resolve()));
    this.exited.then(() => {
      for (const w of this.waiters.splice(0))
        w.reject(new Error(`the claimer exited (${this.child.exitCode ?? this.child.signalCode}) before printing the line`));
    });
  }

  private check(): void {
    const lines = this.out.split("\n");
    for (const w of [...this.waiters]) {
      const line = lines.find(w.test);
      if (line !== undefined) {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        w.resolve(line);
      }
    }
  }

  line(test: (line: string) => boolean): Promise<string> {
    return new Promise((resolve, reject) => {
      this.waiters.push({ test, resolve, reject });
      this.check();
    });
  }

  go(): void {
    this.child.stdin!.write("go\n");
  }

  async claims(): Promise<[number, number, number][]> {
    return JSON.parse(await this.line((l) => l.startsWith("["))) as [number, number, number][];
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill("SIGKILL");
    await this.exited;
  }
}

const claimers: Claimer[] = [];

describe("userns ranges", () => {
  before(() => {
    top = mkdtempSync(join(tmpdir(), "ctrexec-userns-ranges-"));
  });
  after(async () => {
    for (const c of claimers) await c.kill();
    rmSync(top, { recursive: true, force: true });
  });

  const pools = resolvePools(undefined);

  it("gives two claims disjoint ranges, the lowest free first, and keeps the table private", () => {
    const state = stateDir();
    const a = claimRange(state, pools, run("a"), silentLogger);
    const b = claimRange(state, pools, run("b"), silentLogger);
    assert.deepEqual([a.uidStart, a.gidStart, a.size], [DEFAULT_POOL.start, DEFAULT_POOL.start, R]);
    assert.deepEqual([b.uidStart, b.gidStart, b.size], [DEFAULT_POOL.start + R, DEFAULT_POOL.start + R, R]);
    const entries = listRanges(state);
    assert.deepEqual(
      entries.map((e) => [e.id, e.uid, e.gid, e.owner, e.namespace, e.runDir]),
      [
        ["a", [DEFAULT_POOL.start, R], [DEFAULT_POOL.start, R], ownerId(), "h2-test", run("a").runDir],
        ["b", [DEFAULT_POOL.start + R, R], [DEFAULT_POOL.start + R, R], ownerId(), "h2-test", run("b").runDir],
      ],
    );
    assert.equal(statSync(join(state, "userns")).mode & 0o777, 0o700);
    assert.equal(statSync(join(state, "userns", "ranges.json")).mode & 0o777, 0o600);
    assert.deepEqual(readdirSync(join(state, "userns")).sort(), ["lock", "ranges.json"], "no temp file left");
  });

  it("records explicit maps: auto claims go around them, and overlapping maps are refused", () => {
    const state = stateDir();
    const maps = (hostId: number) => ({ uidMap: [{ hostId, size: R }], gidMap: [{ hostId, size: R }] });
    const x = claimMapping(state, maps(DEFAULT_POOL.start), run("x"), silentLogger);
    assert.deepEqual([x.uidStart, x.size], [DEFAULT_POOL.start, R]);
    // The lowest slot is the explicit run's: auto takes the next.
    assert.equal(claimRange(state, pools, run("a"), silentLogger).uidStart, DEFAULT_POOL.start + R);
    assert.throws(() => claimMapping(state, maps(DEFAULT_POOL.start + R + 10), run("y"), silentLogger), FailedPreconditionError);
    // A map of several lines is held as the span of its host ids.
    const sparse = {
      uidMap: [
        { hostId: 0x40000000, size: 10 },
        { hostId: 0x40001000, size: 10 },
      ],
      gidMap: [{ hostId: 0x40000000, size: 10 }],
    };
    claimMapping(state, sparse, run("z"), silentLogger);
    assert.throws(() => claimMapping(state, maps(0x40000800 - R + 1), run("w"), silentLogger), FailedPreconditionError);
    // The very same maps may be shared on purpose (an executor's default maps): they are held while either lives.
    const x2 = claimMapping(state, maps(DEFAULT_POOL.start), run("x2"), silentLogger);
    x.release();
    assert.equal(claimRange(state, pools, run("c"), silentLogger).uidStart, DEFAULT_POOL.start + 2 * R);
    x2.release();
    assert.equal(claimRange(state, pools, run("b"), silentLogger).uidStart, DEFAULT_POOL.start);
  });

  it("refuses host ids that belong to an account of the host: a user, its primary group, a group", () => {
    const dir = join(top, "accounts");
    mkdirSync(dir, { recursive: true });
    const S = DEFAULT_POOL.start;
    writeFileSync(join(dir, "passwd"), `root:x:0:0::/root:/bin/sh\nsvc:x:${S + 5}:100::/:/bin/false\nalice:x:70000:${S + 2 * R}::/:/bin/sh\n`);
    writeFileSync(join(dir, "group"), `root:x:0:\nops:x:${S + 3 * R + 7}:\n`);
    const files = { passwd: join(dir, "passwd"), group: join(dir, "group") };
    const check = (uids: [number, number][], gids: [number, number][]) => checkAgainstAccounts({ uids, gids }, "userns", files);
    const refused = (uids: [number, number][], gids: [number, number][], who: RegExp) =>
      assert.throws(
        () => check(uids, gids),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "userns" && who.test(e.message),
      );
    refused([[S, R]], [[S + R, R]], /"svc" with uid/);
    refused([[S + R, R]], [[S + 2 * R, R]], /"alice" with gid/);
    refused([[S + R, R]], [[S + 3 * R, R]], /"ops" with gid/);
    check([[S + R, R]], [[S + R, R]]);
  });

  it("finds host ids in a range /etc/subuid or /etc/subgid delegates to a user, but the pool's own user's", () => {
    const dir = join(top, "delegated");
    mkdirSync(dir, { recursive: true });
    const S = DEFAULT_POOL.start;
    // useradd hands out 65536 ids per user upwards from 100000: the 4000th user's reaches the default pool.
    writeFileSync(join(dir, "subuid"), `# comment\nalice:100000:65536\nbob:${S + 5 * R - 10}:65536\n1002:${S + 9 * R}:${R}\n`);
    writeFileSync(join(dir, "subgid"), `alice:100000:65536\ncarol:${S + 7 * R}:1\n`);
    const files = { subuid: join(dir, "subuid"), subgid: join(dir, "subgid") };
    const found = (uids: [number, number][], gids: [number, number][], except: string[] = []) => delegatedOverlap({ uids, gids }, except, files);
    // The whole default pool: bob's range reaches into it (10 ids before one of its ranges), carol's gid too.
    assert.deepEqual(found([[S, 1024 * R]], [[S, R]]), { file: files.subuid, owner: "bob", start: S + 5 * R - 10, size: R });
    assert.match(describeOverlap(found([[S, 1024 * R]], [[S, R]])!), /subuid gives "bob" the ids \d+-\d+$/);
    assert.equal(found([[S + 10 * R, R]], [[S + 7 * R, R]])?.owner, "carol");
    assert.equal(found([[S + 9 * R, R]], [[S, R]])?.owner, "1002");
    // Ranges that only touch are apart; a user's range is the pool's when the pool is that user's.
    assert.equal(found([[S + 5 * R + R - 10, R]], [[S + 8 * R, R]]), undefined);
    assert.equal(found([[S + 4 * R + R - 10, R]], [[S, R]], ["bob"]), undefined);
    assert.equal(found([[S + 4 * R, 6 * R]], [[S, R]], ["bob"])?.owner, "1002");
  });

  it("reads subuid lines as shadow does: hex, octal, blanks and a sign, a fourth field", () => {
    const dir = join(top, "shadow-numbers");
    mkdirSync(dir, { recursive: true });
    const S = DEFAULT_POOL.start; // 0x10000000, octal 02000000000
    const at = (line: string) => {
      writeFileSync(join(dir, "subuid"), `${line}\n`);
      writeFileSync(join(dir, "subgid"), "");
      return delegatedOverlap({ uids: [[S, R]], gids: [] }, [], { subuid: join(dir, "subuid"), subgid: join(dir, "subgid") });
    };
    for (const line of ["x:0x10000000:65536", "x:02000000000:10", "x: 268435456:10", "x:+268435456:20", "x:268435456:65536:extra"]) {
      assert.equal(at(line)?.start, S, line);
    }
    // Octal as shadow reads it, not as decimal: 01777777777 is 268435455, one below the pool, and 2 ids reach it.
    assert.equal(at("x:01777777777:1"), undefined);
    assert.equal(at("x:01777777777:2")?.start, S - 1);
    // What shadow cannot read gives nobody ids.
    for (const line of ["x:abc:65536", "x:268435456", "#x:268435456:10", ":268435456:10"]) assert.equal(at(line), undefined, line);
    // A pool { subuid } reads its user's range the same way.
    writeFileSync(join(dir, "subuid"), "rl:0x100000:0x20000\n");
    writeFileSync(join(dir, "subgid"), "rl:0400000:65536\n");
    assert.deepEqual(resolvePools({ subuid: "rl" }, { subuid: join(dir, "subuid"), subgid: join(dir, "subgid"), passwd: join(dir, "none") }), {
      uid: { start: 0x100000, size: 2 * R },
      gid: { start: 0o400000, size: R },
      delegatedTo: ["rl"],
    });
  });

  it("frees a range on release, once: a second release changes nothing", () => {
    const state = stateDir();
    const a = claimRange(state, pools, run("a"), silentLogger);
    const b = claimRange(state, pools, run("b"), silentLogger);
    a.release();
    assert.deepEqual(
      listRanges(state).map((e) => e.id),
      ["b"],
    );
    const c = claimRange(state, pools, run("c"), silentLogger);
    assert.equal(c.uidStart, a.uidStart, "the freed range is the lowest free one again");
    a.release(); // must not free c's range, which is the same ids
    assert.deepEqual(
      listRanges(state)
        .map((e) => e.id)
        .sort(),
      ["b", "c"],
    );
    b.release();
    c.release();
    assert.deepEqual(listRanges(state), []);
  });

  it("never gives the same ids to claims of two processes at once", async () => {
    const state = stateDir();
    const a = new Claimer(state, pools, 20, join(top, "gone-a"), false);
    const b = new Claimer(state, pools, 20, join(top, "gone-b"), false);
    claimers.push(a, b);
    // Both are started and waiting before either claims: their claims run against each other.
    await Promise.all([a.line((l) => l === "ready"), b.line((l) => l === "ready")]);
    a.go();
    b.go();
    const all = [...(await a.claims()), ...(await b.claims())];
    await Promise.all([a.exited, b.exited]);
    assert.equal(all.length, 40);
    assert.ok(disjoint(all.map(([u, , size]) => [u, size])), "uid ranges overlap");
    assert.ok(disjoint(all.map(([, g, size]) => [g, size])), "gid ranges overlap");
    // The lowest free ranges, all of them: 40 distinct slots from the pool's start.
    assert.deepEqual(
      all.map(([u]) => (u - DEFAULT_POOL.start) / R).sort((x, y) => x - y),
      Array.from({ length: 40 }, (_, i) => i),
    );
    assert.equal(listRanges(state).length, 40);
    // Both owners are dead and none of their run dirs exists: prune frees all of them.
    assert.equal(pruneRanges(state, silentLogger), 40);
    assert.deepEqual(listRanges(state), []);
  });

  it("keeps a SIGKILLed process's range while its run dir exists, and prune frees it after", async () => {
    const state = stateDir();
    const runDirs = join(top, "killed-runs");
    mkdirSync(join(runDirs, "0"), { recursive: true });
    const c = new Claimer(state, pools, 1, runDirs, true);
    claimers.push(c);
    await c.line((l) => l === "ready");
    c.go();
    const [[uid]] = (await c.claims()) as [[number, number, number]];
    await c.kill();
    assert.equal(c.child.signalCode, "SIGKILL");
    // A claim does not take a dead owner's range: its container may still run.
    const mine = claimRange(state, pools, run("mine"), silentLogger);
    assert.notEqual(mine.uidStart, uid);
    assert.equal(pruneRanges(state, silentLogger), 0, "its run dir exists: the run may still be going");
    assert.equal(listRanges(state).length, 2);
    rmSync(join(runDirs, "0"), { recursive: true });
    const log = recorder();
    assert.equal(pruneRanges(state, log), 1);
    assert.match(log.lines.join("\n"), /freed the user namespace range of a dead run/);
    // Our own entry names no existing run dir, but its owner (this process) lives.
    assert.deepEqual(
      listRanges(state).map((e) => e.id),
      ["mine"],
    );
    assert.equal(pruneRanges(state, silentLogger), 0);
    mine.release();
  });

  it("prunes within a namespace only the ids prune knows have no task", async () => {
    const state = stateDir();
    const c = new Claimer(state, pools, 3, join(top, "gone-scope"), false);
    claimers.push(c);
    await c.line((l) => l === "ready");
    c.go();
    await c.claims();
    await c.exited;
    const ids = listRanges(state).map((e) => e.id);
    assert.equal(pruneRanges(state, silentLogger, { namespace: "other-ns", hasTask: () => false }), 0);
    assert.equal(pruneRanges(state, silentLogger, { namespace: "h2-test", hasTask: (id) => id === ids[0] }), 2);
    assert.deepEqual(
      listRanges(state).map((e) => e.id),
      [ids[0]],
    );
  });

  it("says when the pool is exhausted, and how many live runs hold it", () => {
    const state = stateDir();
    const small = resolvePools({ start: 0x10000000, size: 2 * R });
    const a = claimRange(state, small, run("a"), silentLogger);
    claimRange(state, small, run("b"), silentLogger);
    assert.throws(
      () => claimRange(state, small, run("c"), silentLogger),
      (e: unknown) =>
        e instanceof FailedPreconditionError &&
        /no free user namespace range in the pool \(uids 268435456-268566527, gids 268435456-268566527: 2 range\(s\) of 65536\): 2 held by live runs, 0 by runs of processes that died/.test(
          e.message,
        ),
    );
    a.release();
    assert.equal(claimRange(state, small, run("c"), silentLogger).uidStart, 0x10000000);
  });

  it("never overlaps ranges of differently configured pools sharing a state dir, taking the lowest free slot", () => {
    const state = stateDir();
    const base = 0x10000000;
    const p1 = resolvePools({ start: base, size: 64 * R });
    const p2 = resolvePools({ start: base + R / 2, size: 64 * R });
    const p3: ResolvedPools = { uid: { start: base + 3 * R, size: 64 * R }, gid: { start: base, size: 64 * R } };
    /** The lowest slot free on both sides, the slow way. */
    const expected = (p: ResolvedPools) => {
      const held = listRanges(state);
      const free = (start: number, side: "uid" | "gid") => held.every((e) => e[side][0] + e[side][1] <= start || start + R <= e[side][0]);
      for (let i = 0; ; i++)
        if (free(p.uid.start + i * R, "uid") && free(p.gid.start + i * R, "gid")) return [p.uid.start + i * R, p.gid.start + i * R];
    };
    const claims: RangeClaim[] = [];
    const order = [p1, p2, p3, p3, p1, p2, p2, p3, p1, p1, p3, p2, p1, p2, p3];
    for (const [k, p] of order.entries()) {
      const want = expected(p);
      const c = claimRange(state, p, run(`r${k}`), silentLogger);
      assert.deepEqual([c.uidStart, c.gidStart], want, `claim ${k}`);
      claims.push(c);
      // Free one now and then, so that later claims fill holes.
      if (k % 4 === 3) claims.splice(k % 3, 1)[0]!.release();
    }
    const held = listRanges(state);
    assert.equal(held.length, claims.length);
    assert.ok(disjoint(held.map((e) => e.uid)));
    assert.ok(disjoint(held.map((e) => e.gid)));
    // The first of p2 could not be its slot 0 (half of it is p1's slot 0).
    assert.equal(held.find((e) => e.id === "r1")!.uid[0], base + R / 2 + R);
  });

  it("refuses a corrupt table rather than guess which ranges are free", () => {
    const state = stateDir();
    const log = recorder();
    const a = claimRange(state, pools, run("a"), log);
    const table = join(state, "userns", "ranges.json");
    for (const text of ["{not json", "", '{"version":2,"ranges":[]}', '{"version":1,"ranges":[{"uid":[1,0],"gid":[1,1]}]}']) {
      writeFileSync(table, text);
      assert.throws(
        () => claimRange(state, pools, run("b"), silentLogger),
        (e: unknown) =>
          e instanceof FailedPreconditionError && /range table .*ranges\.json is unreadable/.test(e.message) && /remove the file/.test(e.message),
        text,
      );
      assert.throws(() => pruneRanges(state, silentLogger), FailedPreconditionError);
      assert.throws(() => listRanges(state), FailedPreconditionError);
    }
    a.release(); // never throws: logs
    assert.match(log.lines.join("\n"), /release failed; it stays held until released again or pruned/);
    // What the message says to do once no run is left: remove the file.
    rmSync(table);
    const b = claimRange(state, pools, run("b"), silentLogger);
    assert.equal(b.uidStart, DEFAULT_POOL.start);
    a.release(); // tried again: a's entry is gone, and b's (the same ids, another run) stays
    assert.deepEqual(
      listRanges(state).map((e) => e.id),
      ["b"],
    );
  });
});

describe("resolvePools", () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ctrexec-subuid-"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const files = (subuid: string, subgid: string, passwd = "") => {
    const f = { subuid: join(dir, `subuid${n}`), subgid: join(dir, `subgid${n}`), passwd: join(dir, `passwd${n}`) };
    n++;
    writeFileSync(f.subuid, subuid);
    writeFileSync(f.subgid, subgid);
    writeFileSync(f.passwd, passwd);
    return f;
  };
  const refusal = (fn: () => unknown): string => {
    try {
      fn();
    } catch (e) {
      assert.ok(e instanceof InvalidArgumentError, String(e));
      assert.equal(e.field, "userns.pool");
      return e.message;
    }
    assert.fail("accepted");
  };

  it("defaults to 1024 ranges from 0x10000000, and takes an explicit pool for uids and gids alike", () => {
    assert.deepEqual(resolvePools(undefined), { uid: { start: 0x10000000, size: 1024 * R }, gid: { start: 0x10000000, size: 1024 * R } });
    assert.deepEqual(resolvePools({ start: 100000, size: 2 * R }), { uid: { start: 100000, size: 2 * R }, gid: { start: 100000, size: 2 * R } });
    assert.deepEqual(resolvePools({ start: 4294967295 - R, size: R }).uid, { start: 4294967295 - R, size: R });
  });

  it("refuses a pool that reaches the host's own ids, is not whole ranges, or passes the last id", () => {
    assert.match(
      refusal(() => resolvePools({ start: 0, size: R })),
      /start 0 is below 65536: the host's own accounts/,
    );
    assert.match(
      refusal(() => resolvePools({ start: 65535, size: R })),
      /below 65536/,
    );
    assert.match(
      refusal(() => resolvePools({ start: R, size: R + 1 })),
      /size 65537 must be a multiple of 65536 and at least 65536/,
    );
    assert.match(
      refusal(() => resolvePools({ start: R, size: 0 })),
      /size 0/,
    );
    assert.match(
      refusal(() => resolvePools({ start: 4294967295 - R + 1, size: R })),
      /passes 4294967295/,
    );
    assert.match(
      refusal(() => resolvePools({ start: 1.5, size: R })),
      /whole numbers/,
    );
    assert.match(
      refusal(() => resolvePools({ subuid: "" })),
      /user name or uid/,
    );
    assert.match(
      refusal(() => resolvePools(7 as never)),
      /must be \{ start, size \} or \{ subuid: user \}/,
    );
  });

  it("takes the user's largest subuid and subgid ranges, by name or by uid", () => {
    const f = files(
      "# comment\nrl:100000:65536\nother:900000:1000000\n1001:300000:131072\n\n",
      "rl:500000:65536\n1001:700000:70000\n",
      "root:x:0:0::/root:/bin/sh\nrl:x:1001:1001::/home/rl:/bin/sh\n",
    );
    assert.deepEqual(resolvePools({ subuid: "rl" }, f), {
      uid: { start: 300000, size: 2 * R },
      gid: { start: 700000, size: R },
      delegatedTo: ["rl", "1001"],
    });
    // Given as its uid: the lines under its name count too.
    assert.deepEqual(resolvePools({ subuid: "1001" }, f).uid, { start: 300000, size: 2 * R });
    // A user /etc/passwd does not know is found by name alone.
    assert.deepEqual(resolvePools({ subuid: "other" }, files("other:900000:1000000\n", "other:900000:65536\n")).uid, {
      start: 900000,
      size: 15 * R,
    });
  });

  it("says which file lacks the user or gives too small a range", () => {
    const f = files("rl:100000:65536\n", "rl:100000:65535\n");
    assert.match(
      refusal(() => resolvePools({ subuid: "nobody-here" }, f)),
      new RegExp(`${f.subuid} has no range for user "nobody-here"`),
    );
    assert.match(
      refusal(() => resolvePools({ subuid: "rl" }, f)),
      new RegExp(`${f.subgid}: the largest range of user "rl" is 65535 ids \\(100000-165534\\); a run needs 65536`),
    );
    assert.match(
      refusal(() => resolvePools({ subuid: "rl" }, { ...f, subuid: join(dir, "missing") })),
      /missing cannot be read .*usermod --add-subuids/,
    );
    assert.match(
      refusal(() => resolvePools({ subuid: "low" }, files("low:1000:65536\n", "low:100000:65536\n"))),
      /1000-66535 .*below 65536/,
    );
  });
});
