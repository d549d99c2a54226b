import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { DeadlineExceededError, FailedPreconditionError, InvalidArgumentError } from "../../src/errors.js";
import { withFileLockWaiting } from "../../src/fs/file-lock.js";
import { configPaths, containerdConfig, tomlString } from "../../src/rootless/containerd-config.js";
import { stopRootless } from "../../src/rootless/daemon.js";
import { rootlessLayout } from "../../src/rootless/layout.js";
import { logTail, openDaemonLog } from "../../src/rootless/log-file.js";
import { checkPrerequisites, findOnPath, missingPrerequisites, parseSubIds, refuseRoot } from "../../src/rootless/preflight.js";
import { alive, daemonProcesses, signal, waitGone } from "../../src/rootless/processes.js";
import { chooseNetwork, IN_NAMESPACE_SCRIPT, parseNetworkRequest, rootlesskitArgs } from "../../src/rootless/rootlesskit-args.js";
import { silentLogger } from "../../src/util/logger.js";
import { nativeAddon } from "../../src/util/native.js";

let top: string;
before(() => {
  top = mkdtempSync(join(tmpdir(), "ctrexec-rootless-daemon-"));
});
after(() => rmSync(top, { recursive: true, force: true }));

/** A path with everything TOML and sh treat specially: spaces, quotes, a backslash, a tab, `$(...)`, non-ASCII. */
const WEIRD = '/data/a b "c" \\d\te $(id) é';

describe("containerd config", () => {
  it("writes TOML basic strings with quotes, backslashes and control characters escaped", () => {
    assert.equal(tomlString("/plain/path"), '"/plain/path"');
    assert.equal(tomlString('a "b" c\\d'), '"a \\"b\\" c\\\\d"');
    assert.equal(tomlString("t\tn\nr\r"), '"t\\tn\\nr\\r"');
    assert.equal(tomlString("\u0001\u001f\u007f"), '"\\u0001\\u001f\\u007f"');
    assert.equal(tomlString("é $(x) 'y'"), "\"é $(x) 'y'\"");
  });

  it("names root, state, both sockets and the opt dir, with CRI disabled and no cgroup", () => {
    const text = containerdConfig({ root: `${WEIRD}/root`, state: `${WEIRD}/state`, address: `${WEIRD}/c.sock`, optDir: `${WEIRD}/opt` });
    const esc = '/data/a b \\"c\\" \\\\d\\te $(id) é';
    const lines = text.split("\n").map((l) => l.trim());
    for (const want of [
      "version = 2",
      `root = "${esc}/root"`,
      `state = "${esc}/state"`,
      'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      `address = "${esc}/c.sock"`,
      `address = "${esc}/c.sock.ttrpc"`,
      'path = ""',
      `path = "${esc}/opt"`,
    ]) {
      assert.ok(lines.includes(want), `missing line ${want} in\n${text}`);
    }
    assert.ok(text.indexOf("[grpc]") < text.indexOf(`"${esc}/c.sock"`) && text.indexOf("[ttrpc]") < text.indexOf(".ttrpc"));
    assert.ok(text.indexOf("[cgroup]") < text.indexOf('path = ""'));
    // Nothing raw that TOML forbids in a basic string.
    // biome-ignore lint/suspicious/noControlCharactersInRegex: looking for raw control characters is the test.
    assert.doesNotMatch(text.replaceAll("\n", ""), /[\u0000-\u001f]/);
  });

  it("takes its paths from the layout, the opt dir beside containerd's root", () => {
    const layout = rootlessLayout({ XDG_RUNTIME_DIR: "/run/user/1234", XDG_DATA_HOME: "/home/u/.local/share" });
    assert.deepEqual(configPaths(layout), {
      root: "/home/u/.local/share/containerd",
      state: "/run/user/1234/containerd",
      address: "/run/user/1234/containerd/containerd.sock",
      optDir: "/home/u/.local/share/containerd-opt",
    });
  });
});

describe("rootlesskit arguments", () => {
  const input = {
    stateDir: "/run/user/1/containerd-rootless",
    containerdState: `${WEIRD}/state`,
    containerdRoot: `${WEIRD}/root`,
    configFile: `${WEIRD}/c.toml`,
  };

  it("host network: --net=host, no slirp4netns flags", () => {
    const args = rootlesskitArgs({ ...input, network: "host" });
    const opts = args.slice(0, args.indexOf("--"));
    assert.deepEqual(opts, [
      "--state-dir=/run/user/1/containerd-rootless",
      "--net=host",
      "--copy-up=/etc",
      "--copy-up=/run",
      "--copy-up=/var/lib",
      "--propagation=rslave",
      "--pidns",
    ]);
  });

  it("slirp4netns: nerdctl's flags, host loopback out of reach", () => {
    const args = rootlesskitArgs({ ...input, network: "slirp4netns" });
    const opts = args.slice(0, args.indexOf("--"));
    for (const f of [
      "--net=slirp4netns",
      "--mtu=65520",
      "--slirp4netns-sandbox=auto",
      "--slirp4netns-seccomp=auto",
      "--disable-host-loopback",
      "--port-driver=builtin",
      "--pidns",
      "--propagation=rslave",
    ]) {
      assert.ok(opts.includes(f), `missing ${f}`);
    }
    assert.ok(!opts.includes("--net=host"));
  });

  it("passes the paths as the script's arguments, never inside it", () => {
    const args = rootlesskitArgs({ ...input, network: "host" });
    const cmd = args.slice(args.indexOf("--") + 1);
    assert.deepEqual(cmd, ["sh", "-euc", IN_NAMESPACE_SCRIPT, "ctrexec-rootless-containerd", `${WEIRD}/state`, `${WEIRD}/root`, `${WEIRD}/c.toml`]);
    assert.ok(!IN_NAMESPACE_SCRIPT.includes("/data"));
  });

  it("the script binds the given dirs and execs containerd with the config, whatever the paths hold", () => {
    // Stub commands that only log their arguments: the script itself runs, nothing is mounted or removed.
    const bin = join(top, "stub-bin");
    const log = join(top, "stub.log");
    mkdirSync(bin, { recursive: true });
    for (const name of ["mkdir", "rm", "mount", "containerd"]) {
      writeFileSync(
        join(bin, name),
        `#!/bin/sh\nprintf '%s' ${name} >> "$STUB_LOG"\nfor a; do printf ' <%s>' "$a" >> "$STUB_LOG"; done\necho >> "$STUB_LOG"\n`,
      );
      chmodSync(join(bin, name), 0o755);
    }
    execFileSync("/bin/sh", ["-euc", IN_NAMESPACE_SCRIPT, "x", `${WEIRD}/state`, `${WEIRD}/root`, `${WEIRD}/c.toml`], {
      env: { PATH: bin, STUB_LOG: log },
    });
    const lines = readFileSync(log, "utf8").trim().split("\n");
    assert.ok(lines.includes(`mount <--bind> <${WEIRD}/state> </run/containerd>`), lines.join("\n"));
    assert.ok(lines.includes(`mount <--bind> <${WEIRD}/root> </var/lib/containerd>`));
    assert.equal(lines.at(-1), `containerd <--config> <${WEIRD}/c.toml>`);
    assert.ok(lines.includes("mkdir <-p> </run/containerd>"));
  });
});

describe("network choice", () => {
  const probe = (tunOpens: boolean, slirpInstalled: boolean) => ({ tunOpens, slirpInstalled, tunMode: "mode 600, owner uid 0" });

  it("auto: slirp4netns only when the tun device opens and slirp4netns is installed", () => {
    assert.equal(chooseNetwork("auto", probe(true, true)).network, "slirp4netns");
    assert.equal(chooseNetwork("auto", probe(false, true)).network, "host");
    assert.match(chooseNetwork("auto", probe(false, true)).reason, /cannot open \/dev\/net\/tun \(mode 600/);
    assert.equal(chooseNetwork("auto", probe(true, false)).network, "host");
    assert.match(chooseNetwork("auto", probe(true, false)).reason, /not installed/);
    assert.equal(chooseNetwork("auto", probe(false, false)).network, "host");
  });

  it("host is taken as asked; slirp4netns is refused when it cannot work", () => {
    assert.equal(chooseNetwork("host", probe(true, true)).network, "host");
    assert.equal(chooseNetwork("slirp4netns", probe(true, true)).network, "slirp4netns");
    assert.throws(
      () => chooseNetwork("slirp4netns", probe(false, true)),
      (e) => e instanceof FailedPreconditionError && /chmod 0666/.test(e.message),
    );
    assert.throws(
      () => chooseNetwork("slirp4netns", probe(true, false)),
      (e) => e instanceof FailedPreconditionError && /setup-rootless/.test(e.message),
    );
  });

  it("parses the request: default auto, anything else named", () => {
    assert.equal(parseNetworkRequest(undefined), "auto");
    assert.equal(parseNetworkRequest("slirp4netns"), "slirp4netns");
    assert.throws(
      () => parseNetworkRequest("bridge"),
      (e) => e instanceof InvalidArgumentError && e.field === "network",
    );
  });
});

describe("prerequisites", () => {
  it("reads the user's subuid ranges by name or uid, skipping others and malformed lines", () => {
    const text = ["# comment", "alice:100000:65536", "1001:300000:10", "bob:165536:65536", "alice:x:1", "alice:5:0", "alice:1:2:3", ""].join("\n");
    assert.deepEqual(parseSubIds(text, "alice", 1001), [
      { start: 100000, count: 65536 },
      { start: 300000, count: 10 },
    ]);
    assert.deepEqual(parseSubIds(text, "carol", 1002), []);
  });

  it("lists everything missing at once and says what to run", () => {
    const bin = join(top, "bin");
    mkdirSync(bin, { recursive: true });
    for (const name of ["rootlesskit", "newuidmap"]) {
      writeFileSync(join(bin, name), "#!/bin/sh\n");
      chmodSync(join(bin, name), 0o755);
    }
    writeFileSync(join(bin, "containerd"), "not executable\n");
    chmodSync(join(bin, "containerd"), 0o644);
    const input = { user: { name: "alice", uid: 1001 }, env: { PATH: `/nonexistent:${bin}` }, subuid: "alice:100000:65536\n", subgid: "bob:1:2\n" };
    assert.equal(findOnPath("rootlesskit", input.env), join(bin, "rootlesskit"));
    assert.deepEqual(missingPrerequisites(input), [
      "newgidmap is not on PATH",
      "containerd is not on PATH (scripts/setup.sh installs it)",
      "/etc/subgid has no range for alice",
    ]);
    assert.throws(
      () => checkPrerequisites(input),
      (e) => e instanceof FailedPreconditionError && e.message.includes("scripts/setup-rootless.sh alice") && e.message.includes("newgidmap"),
    );
  });

  it("refuses root outside a user namespace only", () => {
    assert.throws(
      () => refuseRoot(0, false),
      (e) => e instanceof FailedPreconditionError && /root uses the system containerd/.test(e.message),
    );
    refuseRoot(0, true);
    refuseRoot(1000, false);
  });
});

describe("daemon log", () => {
  it("shows the tail of this start's output only", () => {
    const path = join(top, "containerd.log");
    writeFileSync(path, "old line 1\nold line 2\n");
    const { fd, offset } = openDaemonLog(path, "start 1");
    writeFileSync(fd, Array.from({ length: 30 }, (_, i) => `line ${i}`).join("\n"));
    assert.equal(logTail(path, offset), Array.from({ length: 20 }, (_, i) => `line ${i + 10}`).join("\n"));
    assert.equal(logTail(path, offset, 2), "line 28\nline 29");
    assert.ok(readFileSync(path, "utf8").startsWith("old line 1\nold line 2\n--- start 1\n"));
    const second = openDaemonLog(path, "start 2");
    assert.equal(logTail(path, second.offset), "");
    assert.equal(logTail(join(top, "missing.log"), 0), "");
  });
});

describe("daemon processes", () => {
  let tree: ChildProcess | undefined;
  after(() => tree?.kill("SIGKILL"));

  it("finds a process's descendants, signals them and sees them gone", async () => {
    tree = spawn("/bin/sh", ["-c", "sleep 300 & sleep 300 & wait"], { stdio: "ignore" });
    const pid = tree.pid!;
    let marks = daemonProcesses(pid, undefined);
    for (let i = 0; i < 100 && marks.length < 3; i++) {
      await new Promise((r) => setTimeout(r, 20));
      marks = daemonProcesses(pid, undefined);
    }
    assert.equal(marks.length, 3, JSON.stringify(marks));
    assert.ok(marks.some((m) => m.pid === pid));
    signal(marks, "SIGKILL");
    assert.deepEqual(await waitGone(marks, 5000), []);
    assert.deepEqual(alive(marks), []);
  });
});

describe("start/stop lock", { skip: nativeAddon()?.flock ? false : "the native addon (flock) is not built" }, () => {
  it("runs one holder at a time, and a waiter past its bound gets a DeadlineExceededError", async () => {
    const path = join(top, "rt", "ctrexec", "rootless.lock");
    mkdirSync(join(top, "rt", "ctrexec"), { recursive: true });
    const busy = () => new DeadlineExceededError("held");
    const order: string[] = [];
    let release!: () => void;
    const held = new Promise<void>((r) => {
      release = r;
    });
    const first = withFileLockWaiting(
      path,
      1000,
      async () => {
        order.push("first in");
        await held;
        order.push("first out");
      },
      busy,
    );
    await new Promise((r) => setTimeout(r, 20));
    // flock excludes open file descriptions, not processes: a second holder in this process waits as another would.
    await assert.rejects(
      withFileLockWaiting(path, 150, async () => order.push("never"), busy),
      DeadlineExceededError,
    );
    const second = withFileLockWaiting(path, 5000, async () => order.push("second"), busy);
    await new Promise((r) => setTimeout(r, 100));
    release();
    await Promise.all([first, second]);
    assert.deepEqual(order, ["first in", "first out", "second"]);
  });
});

describe("host root and a user's record", () => {
  const hostRoot = process.getuid?.() === 0 && readFileSync("/proc/self/uid_map", "utf8").trim().split(/\s+/).join(" ") === "0 0 4294967295";
  it("stop refuses host root: the record it would act on is the user's to write", { skip: !hostRoot && "needs host root" }, async () => {
    const dir = mkdtempSync(join(tmpdir(), "ctrexec-rootless-stop-"));
    try {
      // A record naming this very process: a stop that trusted it would signal it.
      const env = { XDG_RUNTIME_DIR: dir, HOME: dir };
      const layout = rootlessLayout(env);
      mkdirSync(join(dir, "ctrexec"), { recursive: true });
      const ino = Number(execFileSync("stat", ["-L", "-c", "%i", "/proc/self/ns/user"], { encoding: "utf8" }).trim());
      writeFileSync(
        layout.recordFile,
        JSON.stringify({
          version: 1,
          rootlesskitPid: process.pid,
          childPid: process.pid,
          network: "host",
          userns: ino,
          address: "/x",
          startedAt: "",
        }),
      );
      await assert.rejects(stopRootless({ env, logger: silentLogger }), FailedPreconditionError);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("enter refuses host root", { skip: !hostRoot && "needs host root" }, () => {
    const cli = join(import.meta.dirname, "../../src/cli/ctrexec.mjs");
    const r = spawnSync(process.execPath, [cli, "rootless", "enter", "--", "true"], { encoding: "utf8" });
    assert.equal(r.status, 125);
    assert.match(r.stderr, /as the user whose daemon it is/);
  });
});
