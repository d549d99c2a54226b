import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { type OptionSpec, parseOptions } from "../../src/cli/args.js";
import { parseSignalName } from "../../src/cli/commands/manage.js";
import { buildRun } from "../../src/cli/commands/run.js";
import { contextFrom } from "../../src/cli/context.js";
import { errorLine, exitCodeFor } from "../../src/cli/exit-codes.js";
import {
  parseAddHost,
  parseCpus,
  parseEnv,
  parseEnvFile,
  parseExitCode,
  parseLabel,
  parseMount,
  parseSize,
  parseTmpfs,
  parseUlimit,
  parseUserns,
  parseVolume,
} from "../../src/cli/flags.js";
import { ExitError, FailedPreconditionError, InvalidArgumentError, NotFoundError, StartError } from "../../src/errors.js";

const specs: OptionSpec[] = [
  { name: "tty", short: "t", kind: "flag", help: "" },
  { name: "interactive", short: "i", kind: "flag", help: "" },
  { name: "user", short: "u", kind: "value", help: "" },
  { name: "env", short: "e", kind: "list", help: "" },
];

/** The flag an error names, for `assert.throws`. */
const names = (flag: string) => (e: unknown) => e instanceof InvalidArgumentError && e.field === flag && e.message.includes(`"${flag}"`);

describe("option parsing", () => {
  it("stops at the first positional, so the command keeps its own flags", () => {
    const p = parseOptions(["-t", "ls", "-l", "--tty"], specs, "run");
    assert.deepEqual([...p.flags], ["tty"]);
    assert.deepEqual(p.rest, ["ls", "-l", "--tty"]);
  });

  it("takes --name value, --name=value, -s value, -svalue, grouped flags and --", () => {
    const p = parseOptions(["--user", "a", "--user=b", "-e", "A=1", "-eB=2", "-it", "-uc", "--", "-x"], specs, "run");
    assert.equal(p.values.get("user"), "c");
    assert.deepEqual(p.lists.get("env"), ["A=1", "B=2"]);
    assert.deepEqual([...p.flags].sort(), ["interactive", "tty"]);
    assert.deepEqual(p.rest, ["-x"]);
  });

  it("names unknown flags and missing values", () => {
    assert.throws(() => parseOptions(["--bogus"], specs, "run"), /run: unknown flag: --bogus/);
    assert.throws(() => parseOptions(["-x"], specs, "run"), /unknown shorthand flag: 'x'/);
    assert.throws(() => parseOptions(["--user"], specs, "run"), /flag needs an argument: --user/);
    assert.throws(() => parseOptions(["--tty=maybe"], specs, "run"), /takes no value/);
  });
});

describe("flag values", () => {
  it("parses sizes with binary units", () => {
    assert.equal(parseSize("--memory", "512"), 512);
    assert.equal(parseSize("--memory", "64k"), 65536);
    assert.equal(parseSize("--memory", "64m"), 64 << 20);
    assert.equal(parseSize("--memory", "1G"), 1 << 30);
    assert.equal(parseSize("--memory", "2mb"), 2 << 20);
    assert.throws(() => parseSize("--memory", "12x"), names("--memory"));
    assert.throws(() => parseSize("--memory", "0"), names("--memory"));
  });

  it("parses --mount for bind and tmpfs with docker's keys", () => {
    assert.deepEqual(parseMount("type=bind,source=/a,target=/b,readonly"), { type: "bind", source: "/a", target: "/b", readonly: true });
    assert.deepEqual(parseMount("src=/a,dst=/b,ro=false"), { type: "bind", source: "/a", target: "/b", readonly: false });
    assert.deepEqual(parseMount("type=tmpfs,destination=/t,tmpfs-size=64m"), { type: "tmpfs", target: "/t", readonly: false, size: 64 << 20 });
    for (const bad of [
      "type=bind,target=/b",
      "type=bind,source=rel,target=/b",
      "type=volume,target=/v",
      "target=/b,source=/a,color=red",
      "type=tmpfs,source=/x,target=/t",
      "source=/a",
    ]) {
      assert.throws(() => parseMount(bad), names("--mount"), bad);
    }
  });

  it("parses -v and --tmpfs", () => {
    assert.deepEqual(parseVolume("/h:/c:ro"), { type: "bind", source: "/h", target: "/c", readonly: true });
    assert.deepEqual(parseVolume("/h:/c"), { type: "bind", source: "/h", target: "/c", readonly: false });
    assert.throws(() => parseVolume("named:/c"), names("--volume"));
    assert.throws(() => parseVolume("/h:/c:zz"), names("--volume"));
    assert.deepEqual(parseTmpfs("/t:size=1m,ro"), { type: "tmpfs", target: "/t", readonly: true, size: 1 << 20 });
    assert.throws(() => parseTmpfs("t"), names("--tmpfs"));
    assert.throws(() => parseTmpfs("/t:mode=1777"), names("--tmpfs"));
  });

  it("takes podman's idmap option in -v and --mount, for binds only", () => {
    assert.deepEqual(parseVolume("/h:/c:idmap"), { type: "bind", source: "/h", target: "/c", readonly: false, idmap: true });
    assert.deepEqual(parseVolume("/h:/c:ro,idmap"), { type: "bind", source: "/h", target: "/c", readonly: true, idmap: true });
    assert.deepEqual(parseVolume("/h:/c:idmap,rw"), { type: "bind", source: "/h", target: "/c", readonly: false, idmap: true });
    assert.deepEqual(parseVolume("/h:/c:ro,ro"), { type: "bind", source: "/h", target: "/c", readonly: true });
    for (const bad of ["/h:/c:ro,rw", "/h:/c:idmap=uids=0-1-10", "/h:/c:ro,", "/h:/c:z", "/h:/c:ro:idmap"]) {
      assert.throws(() => parseVolume(bad), names("--volume"), bad);
    }
    assert.throws(() => parseVolume("/h:/c:idmap=uids=0-1-10"), /idmap takes no options/);
    assert.throws(() => parseVolume("/h:/c:ro,rw"), /contradict/);
    assert.deepEqual(parseMount("src=/a,dst=/b,idmap"), { type: "bind", source: "/a", target: "/b", readonly: false, idmap: true });
    assert.deepEqual(parseMount("src=/a,dst=/b,idmap=false,ro"), { type: "bind", source: "/a", target: "/b", readonly: true });
    assert.throws(() => parseMount("type=tmpfs,dst=/t,idmap"), /idmap is only for bind mounts/);
    assert.throws(() => parseMount("src=/a,dst=/b,idmap=maybe"), names("--mount"));
  });

  it("parses --userns auto|host and podman's --uidmap/--gidmap, each map kind standing in for the other", () => {
    assert.equal(parseUserns(undefined, [], []), undefined);
    assert.equal(parseUserns("auto", [], []), "auto");
    assert.equal(parseUserns("host", [], []), "host");
    assert.equal(parseUserns("", [], []), "host", "podman's alias");
    const a = { containerId: 0, hostId: 300000, size: 65536 };
    const b = { containerId: 0, hostId: 400000, size: 1000 };
    assert.deepEqual(parseUserns(undefined, ["0:300000:65536"], []), { uidMap: [a], gidMap: [a] });
    assert.deepEqual(parseUserns(undefined, [], ["0:300000:65536"]), { uidMap: [a], gidMap: [a] });
    assert.deepEqual(parseUserns(undefined, ["0:300000:65536"], ["0:400000:1000"]), { uidMap: [a], gidMap: [b] });
    assert.deepEqual(parseUserns(undefined, ["0:300000:1", "1:300001:65535"], []), {
      uidMap: [
        { containerId: 0, hostId: 300000, size: 1 },
        { containerId: 1, hostId: 300001, size: 65535 },
      ],
      gidMap: [
        { containerId: 0, hostId: 300000, size: 1 },
        { containerId: 1, hostId: 300001, size: 65535 },
      ],
    });
  });

  it("refuses --userns with maps, unknown modes and malformed maps, naming the flag", () => {
    for (const [userns, uid, gid] of [
      ["auto", ["0:300000:65536"], []],
      ["host", [], ["0:300000:65536"]],
      ["auto", ["0:300000:65536"], ["0:300000:65536"]],
    ] as const) {
      assert.throws(
        () => parseUserns(userns, uid, gid),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "--userns" && /cannot be used together/.test(e.message),
      );
    }
    for (const mode of ["keep-id", "auto:size=1024", "AUTO", "private", "ns:/proc/1/ns/user"])
      assert.throws(() => parseUserns(mode, [], []), names("--userns"), mode);
    const fieldIs = (f: string) => (e: unknown) => e instanceof InvalidArgumentError && e.field === f;
    for (const bad of ["0:300000", "x:1:2", "0:300000:0", "0:-1:5", "0:300000:65536:1"]) {
      assert.throws(() => parseUserns(undefined, [bad], []), fieldIs("--uidmap"), bad);
      assert.throws(() => parseUserns(undefined, ["0:300000:65536"], [bad]), fieldIs("--gidmap"), bad);
    }
  });

  it("parses env: K=V, bare K from the caller, env files with comments", () => {
    assert.equal(parseEnv("A=1"), "A=1");
    assert.equal(parseEnv("HOME", { HOME: "/h" }), "HOME=/h");
    assert.equal(parseEnv("NOPE", {}), undefined);
    assert.throws(() => parseEnv("=x"), names("--env"));
    assert.deepEqual(parseEnvFile("# c\n\nA=1\n  B=two words\nC\nD\n", { C: "c" }), ["A=1", "B=two words", "C=c"]);
  });

  it("parses ulimits, hosts, cpus, exit codes, labels and signals", () => {
    assert.deepEqual(parseUlimit("nofile=1024:2048"), { name: "nofile", soft: 1024, hard: 2048 });
    assert.deepEqual(parseUlimit("core=unlimited"), { name: "core", soft: -1, hard: -1 });
    assert.throws(() => parseUlimit("nofiles=1"), names("--ulimit"));
    assert.throws(() => parseUlimit("nofile=9:1"), names("--ulimit"));
    assert.deepEqual(parseAddHost("db:10.0.0.5"), { host: "db", ip: "10.0.0.5" });
    assert.deepEqual(parseAddHost("v6=[2001:db8::1]"), { host: "v6", ip: "2001:db8::1" });
    assert.throws(() => parseAddHost("justaname"), names("--add-host"));
    assert.deepEqual(parseCpus("1.5"), { cpuPeriod: 100000, cpuQuota: 150000 });
    assert.throws(() => parseCpus("-1"), names("--cpus"));
    assert.equal(parseExitCode("3"), 3);
    assert.throws(() => parseExitCode("256"), names("--valid-exit-code"));
    assert.deepEqual(parseLabel("a=b=c"), ["a", "b=c"]);
    assert.equal(parseSignalName("TERM"), 15);
    assert.equal(parseSignalName("SIGHUP"), 1);
    assert.equal(parseSignalName("9"), 9);
    assert.throws(() => parseSignalName("BOGUS"), names("--signal"));
  });
});

describe("ctrexec run command line", () => {
  const ctx = contextFrom(parseOptions([], [], "test"));
  it("maps every flag onto the run", async () => {
    const r = await buildRun(
      [
        "--rootfs",
        "/srv/r",
        "--id",
        "job1",
        "--rm",
        "--mount",
        "type=tmpfs,target=/t,tmpfs-size=1m",
        "-v",
        "/h:/c:ro",
        "--tmpfs",
        "/x",
        "--network",
        "none",
        "-u",
        "daemon",
        "-w",
        "/work",
        "-e",
        "A=1",
        "-h",
        "box",
        "--add-host",
        "db:10.0.0.5",
        "--dns",
        "1.1.1.1",
        "--dns-search",
        "example.org",
        "--dns-option",
        "ndots:2",
        "--read-only",
        "-t",
        "-i",
        "--ulimit",
        "nofile=10",
        "--cgroup-parent",
        "cg",
        "--memory",
        "64m",
        "--cpus",
        "0.5",
        "--cpuset-cpus",
        "0",
        "--privileged",
        "--valid-exit-code",
        "1",
        "--valid-exit-code",
        "2",
        "-l",
        "k=v",
        "sh",
        "-c",
        "echo hi",
      ],
      ctx,
    );
    assert.equal(r.help, false);
    if (r.help) return;
    assert.deepEqual(r.meta, {
      args: ["sh", "-c", "echo hi"],
      env: ["A=1"],
      tty: true,
      readonlyRootfs: true,
      security: "insecure",
      extraHosts: [{ host: "db", ip: "10.0.0.5" }],
      ulimits: [{ name: "nofile", soft: 10, hard: 10 }],
      validExitCodes: [1, 2],
      network: "none",
      user: "daemon",
      cwd: "/work",
      hostname: "box",
      cgroupParent: "cg",
      resources: { memory: 64 << 20, cpuPeriod: 100000, cpuQuota: 50000, cpusetCpus: "0" },
    });
    assert.equal(r.id, "job1");
    assert.equal(r.interactive, true);
    assert.deepEqual(
      r.mounts.map((m) => [m.dest, m.readonly]),
      [
        ["/t", false],
        ["/c", true],
        ["/x", false],
      ],
    );
    assert.deepEqual(r.labels, { k: "v" });
    assert.deepEqual(r.dns, { nameservers: ["1.1.1.1"], searchDomains: ["example.org"], options: ["ndots:2"] });
  });

  it("passes host-gateway on for the executor to resolve", async () => {
    const r = await buildRun(["--add-host", "gw:host-gateway", "true"], ctx);
    assert.ok(!r.help && r.meta.extraHosts![0]!.ip === "host-gateway");
  });

  it("puts the user namespace and idmapped binds on the run, and refuses idmap without a user namespace", async () => {
    const auto = await buildRun(["--userns=auto", "-v", "/h:/c:ro,idmap", "--mount", "src=/a,dst=/b", "true"], ctx);
    assert.ok(!auto.help);
    assert.equal(auto.meta.userns, "auto");
    assert.deepEqual(
      auto.mounts.map((m) => [m.dest, m.readonly, m.idmap]),
      [
        ["/b", false, undefined],
        ["/c", true, true],
      ],
    );
    const mapped = await buildRun(["--uidmap", "0:300000:65536", "--mount", "src=/a,dst=/b,idmap", "true"], ctx);
    assert.ok(!mapped.help);
    assert.deepEqual(mapped.meta.userns, {
      uidMap: [{ containerId: 0, hostId: 300000, size: 65536 }],
      gidMap: [{ containerId: 0, hostId: 300000, size: 65536 }],
    });
    assert.equal(mapped.mounts[0]!.idmap, true);
    const plain = await buildRun(["true"], ctx);
    assert.ok(!plain.help && !("userns" in plain.meta));
    await assert.rejects(
      buildRun(["-v", "/h:/c:idmap", "true"], ctx),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "--volume" && /needs a user namespace/.test(e.message),
    );
    await assert.rejects(
      buildRun(["--userns", "host", "--mount", "src=/a,dst=/b,idmap", "true"], ctx),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "--mount",
    );
    await assert.rejects(
      buildRun(["--userns", "auto", "--uidmap", "0:1:2", "true"], ctx),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "--userns",
    );
  });

  it("needs a command, and rejects a relative rootfs", async () => {
    await assert.rejects(buildRun([], ctx), /requires a command/);
    await assert.rejects(buildRun(["--rootfs", "rel", "true"], ctx), names("--rootfs"));
    await assert.rejects(buildRun(["--env-file", "/nonexistent/file", "true"], ctx), names("--env-file"));
  });
});

describe("exit codes", () => {
  it("passes the process's code through and maps ctrexec's own failures", () => {
    assert.deepEqual(exitCodeFor(new ExitError(3)), { code: 3, print: false });
    assert.deepEqual(exitCodeFor(new ExitError(137)), { code: 137, print: false });
    assert.deepEqual(exitCodeFor(new StartError("x", "not-found")), { code: 127, print: true });
    assert.deepEqual(exitCodeFor(new StartError("x", "not-executable")), { code: 126, print: true });
    assert.deepEqual(exitCodeFor(new NotFoundError("x")), { code: 125, print: true });
  });

  it("a refused user namespace is ctrexec's own failure: 125 and one ctrexec: line", () => {
    const err = new FailedPreconditionError("idmapped mounts are not supported on /srv (xfs): EINVAL: refused\nsecond line");
    assert.deepEqual(exitCodeFor(err), { code: 125, print: true });
    assert.equal(errorLine(err), "ctrexec: idmapped mounts are not supported on /srv (xfs): EINVAL: refused");
  });
});
