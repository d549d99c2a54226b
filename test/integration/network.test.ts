import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import net from "node:net";
import { networkInterfaces, tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { FailedPreconditionError, InvalidArgumentError, UnavailableError } from "../../src/errors.js";
import { ContainerdExecutor, type ExecutorOptions } from "../../src/executor/executor.js";
import type { ProcessMeta } from "../../src/executor/types.js";
import { BridgeProvider, DEFAULT_IPAM_DIR } from "../../src/network/bridge.js";
import { CniError } from "../../src/network/cni.js";
import { buildResolvConf } from "../../src/oci/resolv-conf.js";
import { createTestEnv, type TestEnv } from "../helpers/env.js";
import { OwnContainerd } from "../helpers/own-containerd.js";
import { Collect } from "../helpers/streams.js";

const run = promisify(execFile);
const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Networking against the real CNI plugins. Traffic goes only to loopback inside containers, to the test's own
 * bridge gateway, and between namespaces the test made; masquerade is off.
 */
describe("network providers (real CNI plugins)", () => {
  let env: TestEnv;
  let cniConfigDir: string;
  const tag = process.pid % 100_000;
  const bridge = `ctrt${tag}`;
  const networkName = `ctrexec-test-${tag}`;
  const subnet = `10.199.${tag % 250}.0/24`;
  const executors: ContainerdExecutor[] = [];

  async function executor(extra: Partial<ExecutorOptions> = {}, bridgeOpts: Partial<NonNullable<ExecutorOptions["bridge"]>> = {}) {
    const ex = await ContainerdExecutor.create({
      namespace: env.namespace,
      root: env.stateDir,
      fifoRoot: env.fifoRoot,
      defaultNetwork: "bridge",
      bridge: { configDir: cniConfigDir, networkName, bridge, subnet, ipMasq: false, poolSize: 2, ...bridgeOpts },
      ...extra,
    });
    executors.push(ex);
    return ex;
  }

  before(async () => {
    env = await createTestEnv("net");
    cniConfigDir = await mkdtemp(join(tmpdir(), "ctrexec-cni-conf-"));
  });
  afterEach(async () => {
    // Close every executor of the test first: idle pooled namespaces are its own, released at close.
    for (const ex of executors.splice(0)) await ex.close();
    await env.assertNoLeaks();
  });
  after(async () => {
    await rm(cniConfigDir, { recursive: true, force: true });
    await env.dispose();
    for (const b of [bridge, `${bridge}t`]) await run("ip", ["link", "del", b]).catch(() => {});
    for (const n of [networkName, `${networkName}-tiny`]) await rm(join(DEFAULT_IPAM_DIR, n), { recursive: true, force: true });
  });

  async function sh(ex: ContainerdExecutor, script: string, meta: Partial<ProcessMeta> = {}) {
    const stdout = new Collect();
    const stderr = new Collect();
    const r = await ex
      .run({
        root: { source: (await import("../../src/executor/mountables.js")).bindMountable(env.rootfs) },
        process: { meta: { args: ["sh", "-c", script], ...meta }, stdout, stderr },
      })
      .catch((e: unknown) => e);
    return { ok: !(r instanceof Error), error: r instanceof Error ? r : undefined, out: stdout.text, err: stderr.text };
  }

  async function assertNetClean(ex?: ContainerdExecutor) {
    if (ex) await ex.close();
    assert.deepEqual(await readdir(join(env.stateDir, "net", env.namespace)).catch(() => []), [], "network namespace files left");
    const veths = await readdir(`/sys/class/net/${bridge}/brif`).catch(() => []);
    assert.deepEqual(veths, [], "veths left on the bridge");
    const ipam = await readdir(join(DEFAULT_IPAM_DIR, networkName)).catch(() => []);
    assert.deepEqual(
      ipam.filter((f) => f !== "lock" && !f.startsWith("last_reserved_ip")),
      [],
      "IPAM reservations left",
    );
  }

  it("none: only loopback, up, and a server on 127.0.0.1 inside is reachable", async () => {
    const ex = await executor({ defaultNetwork: "host" });
    const r = await sh(
      ex,
      "ip -o link | cut -d' ' -f2; ip -o link show lo | grep -q ',UP' && echo lo-up; (nc -l -p 8080 > /tmp/got &); sleep 0.3; echo hi | nc -w1 127.0.0.1 8080; sleep 0.2; cat /tmp/got",
      { network: "none" },
    );
    assert.ok(r.ok, r.err);
    assert.equal(r.out, "lo:\nlo-up\nhi\n");
  });

  it("host: sees the host's interfaces and keeps the host's resolv.conf", async () => {
    const ex = await executor({ defaultNetwork: "host" });
    const r = await sh(ex, "cut -d: -f1 /proc/net/dev | tr -d ' ' | tail -n +3; echo ---; cat /etc/resolv.conf", { network: "host" });
    assert.ok(r.ok, r.err);
    const [ifaces, resolv] = r.out.split("---\n");
    for (const name of Object.keys(networkInterfaces())) assert.ok(ifaces!.split("\n").includes(name), `${name} not seen inside`);
    const hostConf = await readFile("/etc/resolv.conf", "utf8").catch(() => "");
    assert.equal(resolv, buildResolvConf(hostConf, { hostNetwork: true }).content);
  });

  it("bridge: an address in the subnet, a default route, and the host's server on the gateway", async () => {
    const ex = await executor();
    const probe = await sh(ex, "ip -4 -o addr show eth0 | awk '{print $4}'; ip route | awk '/^default/ {print $3}'; cat /etc/resolv.conf");
    assert.ok(probe.ok, probe.err);
    const [cidr, gateway] = probe.out.split("\n");
    const prefix = `${subnet.split(".").slice(0, 3).join(".")}.`;
    assert.ok(cidr!.startsWith(prefix) && cidr!.endsWith("/24"), `address ${cidr}`);
    assert.equal(gateway, `${prefix}1`);
    const hostConf = await readFile("/etc/resolv.conf", "utf8").catch(() => "");
    assert.ok(probe.out.endsWith(buildResolvConf(hostConf, { hostNetwork: false }).content), "resolv.conf is not the sandbox form");

    const received: string[] = [];
    const server = net.createServer((s) => s.on("data", (d) => received.push(d.toString())).on("end", () => s.end()));
    await new Promise<void>((r) => server.listen(0, gateway, r));
    const port = (server.address() as net.AddressInfo).port;
    try {
      const r = await sh(ex, `echo hello | nc -w2 ${gateway} ${port} && echo sent`, { extraHosts: [{ host: "hostgw", ip: "host-gateway" }] });
      assert.ok(r.ok, r.err);
      assert.equal(r.out, "sent\n");
      assert.equal(received.join(""), "hello\n");
      const gw = await sh(ex, "grep hostgw /etc/hosts", { extraHosts: [{ host: "hostgw", ip: "host-gateway" }] });
      assert.equal(gw.out, `${gateway}\thostgw\n`);
    } finally {
      server.close();
    }
    await assertNetClean(ex);
  });

  it("bridge: two concurrent runs reach each other", async () => {
    const ex = await executor();
    const serverOut = new Collect();
    const { bindMountable } = await import("../../src/executor/mountables.js");
    const serverRun = ex.run({
      root: { source: bindMountable(env.rootfs) },
      process: { meta: { args: ["sh", "-c", "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1; nc -l -p 9000"] }, stdout: serverOut },
    });
    let ip = "";
    for (let i = 0; i < 100 && !ip; i++) {
      await delay(50);
      ip = serverOut.text.split("\n")[0] ?? "";
      if (!serverOut.text.includes("\n")) ip = "";
    }
    await delay(200);
    const client = await sh(ex, `echo ping | nc -w2 ${ip} 9000 && echo sent`);
    assert.ok(client.ok, client.err);
    await serverRun;
    assert.equal(serverOut.text, `${ip}\nping\n`);
    await assertNetClean(ex);
  });

  it("bridge: executors with different state dirs on one network never get the same address", async () => {
    const otherState = await mkdtemp(join(tmpdir(), "ctrexec-net-state-"));
    const a = await executor({}, { poolSize: 0 });
    const b = await executor({ root: otherState }, { poolSize: 0 });
    try {
      const script = "ip -4 -o addr show eth0 | awk '{print $4}'; sleep 0.5";
      const [x, y] = await Promise.all([sh(a, script), sh(b, script)]);
      assert.ok(x.ok && y.ok, `${x.err}${y.err}`);
      assert.match(x.out, /^10\./);
      assert.notEqual(x.out, y.out, "one address handed out twice on one bridge");
    } finally {
      // Closed before the state dir goes: their pooled namespace files are mounts.
      await a.close();
      await b.close();
      assert.deepEqual(await readdir(join(otherState, "net", env.namespace)).catch(() => []), [], "network namespace files left");
      await rm(otherState, { recursive: true, force: true });
    }
    await assertNetClean();
  });

  for (const poolSize of [0, 3]) {
    it(`bridge: 50 runs, 4 at a time, leave nothing (pool ${poolSize})`, async () => {
      const ex = await executor({}, { poolSize });
      let next = 0;
      const outs: string[] = [];
      await Promise.all(
        Array.from({ length: 4 }, async () => {
          while (next < 50) {
            const i = next++;
            const r = await sh(ex, `echo ${i}; ip -4 -o addr show eth0 | grep -c inet`);
            assert.ok(r.ok, r.err);
            outs[i] = r.out;
          }
        }),
      );
      assert.deepEqual(
        outs,
        Array.from({ length: 50 }, (_, i) => `${i}\n1\n`),
      );
      await assertNetClean(ex);
    });
  }

  it("bridge: a privileged run's namespace is not reused", async () => {
    const ex = await executor({}, { poolSize: 1 });
    const a = await sh(ex, "ip addr add 10.254.254.254/32 dev lo && echo changed", { security: "insecure" });
    assert.ok(a.ok, a.err);
    assert.equal(a.out, "changed\n");
    for (let i = 0; i < 3; i++) {
      const b = await sh(ex, "ip -o addr show lo | grep -c 10.254.254.254 || true");
      assert.equal(b.out, "0\n", "a namespace changed by a privileged run was reused");
    }
    await assertNetClean(ex);
  });

  /** The test network as a provider of the test's own, with a full pool of one: which namespace comes next is then known. */
  async function warmProvider(): Promise<BridgeProvider> {
    const provider = await BridgeProvider.create({
      stateDir: env.stateDir,
      namespace: env.namespace,
      configDir: cniConfigDir,
      networkName,
      bridge,
      subnet,
      ipMasq: false,
      poolSize: 1,
    });
    await provider.ready();
    return provider;
  }

  it("bridge: a namespace given back without knowing its run is gone is destroyed, never lent again", async () => {
    const provider = await warmProvider();
    const pathOf = (h: { namespace: { kind: string; path?: string } }) => h.namespace.path ?? "";
    try {
      const a = await provider.create({ id: "a", hostname: "a" });
      // The pool has room for it again: only `reusable: false` keeps it from the next run.
      await a.close({ reusable: false });
      await provider.ready();
      const b = await provider.create({ id: "b", hostname: "b" });
      assert.notEqual(pathOf(b), pathOf(a), "a namespace whose run may live on was lent to the next run");
      await b.close({ reusable: true });
      const c = await provider.create({ id: "c", hostname: "c" });
      assert.equal(pathOf(c), pathOf(b), "a namespace known free was not reused");
      await c.close({ reusable: true });
    } finally {
      await provider.close();
    }
    await assertNetClean();
  });

  // Its own timeout, below the runner's per-file one: a body stuck while containerd is away (an earlier version
  // waited for the first run's open output) then fails here and `t.after` cleans up, where the runner would kill
  // the whole file, leaving the container's shim and runc state for good.
  it("bridge: the namespace of a run whose task could not be deleted (containerd away) is not lent to the next run", {
    timeout: 90_000,
  }, async (t) => {
    assert.deepEqual(await OwnContainerd.leftByDeadRuns("netfree"), [], "an earlier run of this test was killed before its cleanup");
    const ctd = new OwnContainerd("netfree");
    // Also after a timeout, which runs no `finally`.
    t.after(() => ctd.dispose());
    await ctd.start();
    const provider = await warmProvider();
    const ex = await executor({ address: ctd.address, reconnectBoundMs: 1500, networkProviders: { bridge: provider } });
    let down = false;
    try {
      const { bindMountable } = await import("../../src/executor/mountables.js");
      const firstOut = new Collect();
      const first = ex
        .run({
          root: { source: bindMountable(env.rootfs) },
          process: { meta: { args: ["sh", "-c", "readlink /proc/self/ns/net; exec sleep 300 </dev/null >/dev/null 2>&1"] }, stdout: firstOut },
        })
        .catch((e: unknown) => e);
      for (let i = 0; i < 200 && !firstOut.text.includes("\n"); i++) await delay(50);
      assert.match(firstOut.text, /^net:\[\d+\]\n$/);
      // The task cannot be deleted while containerd is away: the run ends with its container still running (its
      // output closed: a run waits for the output to end).
      down = true;
      await ctd.stop();
      const err = await first;
      assert.ok(err instanceof UnavailableError, String(err));
      await ctd.start();
      down = false;
      const second = await sh(ex, "readlink /proc/self/ns/net");
      assert.ok(second.ok, second.err);
      assert.match(second.out, /^net:\[\d+\]\n$/);
      assert.notEqual(second.out, firstOut.text, "the next run got the network namespace of a container that may still run");
    } finally {
      // Back, containerd lets the executor finish the first run's cleanup (kill, delete).
      if (down) await ctd.start();
      let left: string[] = ["?"];
      for (let i = 0; i < 100 && left.length > 0; i++) {
        await delay(200);
        left = (await ex.client.containers.list().catch(() => [{ id: "?" }])).map((c) => c.id);
      }
      await ex.client.namespaces.delete(env.namespace).catch(() => {});
      await ex.close();
      await ctd.dispose();
      assert.deepEqual(left, [], "the first run's container was not deleted once containerd was back");
    }
    // runc's state lives under the host's runc root, not in our containerd's dirs that dispose removed.
    assert.deepEqual(await ctd.runcStates(env.namespace), [], "runc state left for a container of our containerd");
    await assertNetClean();
  });

  it("default is bridge when the plugins and the network config are there, else host", async () => {
    const confDir = await mkdtemp(join(tmpdir(), "ctrexec-cni-auto-"));
    try {
      const base = { namespace: env.namespace, root: env.stateDir, fifoRoot: env.fifoRoot };
      const none = await ContainerdExecutor.create({ ...base, bridge: { configDir: confDir, networkName } });
      assert.equal(await none.defaultNetwork(), "host");
      await none.close();
      await writeFile(join(confDir, "10-test.conflist"), JSON.stringify({ cniVersion: "1.0.0", name: networkName, plugins: [{ type: "bridge" }] }));
      const withConf = await ContainerdExecutor.create({ ...base, bridge: { configDir: confDir, networkName } });
      assert.equal(await withConf.defaultNetwork(), "bridge");
      await withConf.close();
    } finally {
      await rm(confDir, { recursive: true, force: true });
    }
  });

  it("errors: a missing plugin, a bad config, an exhausted subnet, each typed and leaving nothing", async () => {
    const emptyDir = await mkdtemp(join(tmpdir(), "ctrexec-cni-empty-"));
    const badConfDir = await mkdtemp(join(tmpdir(), "ctrexec-cni-bad-"));
    try {
      const noPlugins = await executor({}, { pluginDirs: [emptyDir] });
      const missing = await sh(noPlugins, "true");
      assert.ok(missing.error instanceof FailedPreconditionError, String(missing.error));
      assert.match(missing.error.message, /CNI plugin "bridge" not found/);

      await writeFile(join(badConfDir, "x.conflist"), "{ not json");
      const badConf = await executor({}, { configDir: badConfDir });
      const bad = await sh(badConf, "true");
      assert.ok(bad.error instanceof InvalidArgumentError, String(bad.error));
      assert.match(bad.error.message, /bad CNI config/);

      // A /30 has one address for containers (.1 is the gateway): the second run at once gets none.
      const tiny = await executor(
        {},
        { subnet: `10.199.${(tag + 1) % 250}.0/30`, bridge: `${bridge}t`, poolSize: 0, networkName: `${networkName}-tiny` },
      );
      const { bindMountable } = await import("../../src/executor/mountables.js");
      let started!: () => void;
      const first = new Promise<void>((r) => (started = r));
      const ac = new AbortController();
      const holder = tiny
        .run({
          root: { source: bindMountable(env.rootfs) },
          process: { meta: { args: ["sleep", "30"] } },
          signal: ac.signal,
          onStarted: () => started(),
        })
        .catch(() => {});
      await first;
      const exhausted = await sh(tiny, "true");
      assert.ok(exhausted.error instanceof CniError, String(exhausted.error));
      assert.match(exhausted.error.message, /CNI ADD failed in plugin "bridge": .*no IP addresses available/);
      ac.abort();
      await holder;
      await tiny.close();
      assert.deepEqual(await readdir(join(env.stateDir, "net", env.namespace)), [], "namespace files left after failures");
      const ipam = await readdir(join(DEFAULT_IPAM_DIR, `${networkName}-tiny`)).catch(() => []);
      assert.deepEqual(
        ipam.filter((f) => f !== "lock" && !f.startsWith("last_reserved_ip")),
        [],
        "IPAM reservations left",
      );
      await run("ip", ["link", "del", `${bridge}t`]).catch(() => {});
    } finally {
      await rm(emptyDir, { recursive: true, force: true });
      await rm(badConfDir, { recursive: true, force: true });
    }
  });

  it("prune: a dead executor's record whose namespace was never made, and its half-written record, go; a live one's stay", async () => {
    const dir = join(env.stateDir, "net", env.namespace);
    await mkdir(dir, { recursive: true });
    const ownerMod = JSON.stringify(new URL("../../src/util/owner.js", import.meta.url).href);
    // The owner id of a process that has exited, in whatever form owner.ts gives it.
    const { stdout } = await run(process.execPath, [
      "--input-type=module",
      "-e",
      `const m = await import(${ownerMod}); process.stdout.write(m.ownerId());`,
    ]);
    const dead = stdout;
    const { ownerId } = await import("../../src/util/owner.js");
    const config = {
      cniVersion: "1.0.0",
      name: networkName,
      plugins: [{ type: "bridge", bridge, ipam: { type: "host-local", ranges: [[{ subnet }]], dataDir: DEFAULT_IPAM_DIR } }],
    };
    const record = (owner: string, id: string) => JSON.stringify({ owner, config, pluginDirs: ["/usr/lib/cni"], containerId: id, ifname: "eth0" });
    await writeFile(join(dir, "ctrexec-00000000000000d1.json"), record(dead, "ctrexec-00000000000000d1"));
    const tmp = `ctrexec-00000000000000d2.json.${encodeURIComponent(dead)}.tmp`;
    await writeFile(join(dir, tmp), record(dead, "ctrexec-00000000000000d2").slice(0, 20));
    await writeFile(join(dir, "ctrexec-00000000000000a1.json"), record(ownerId(), "ctrexec-00000000000000a1"));
    const liveTmp = `ctrexec-00000000000000a2.json.${encodeURIComponent(ownerId())}.tmp`;
    await writeFile(join(dir, liveTmp), "");
    const ex = await executor({ defaultNetwork: "host" });
    const removed = await ex.prune();
    assert.ok(removed.includes(`network namespace ${join(dir, "ctrexec-00000000000000d1")}`), removed.join("\n"));
    assert.deepEqual((await readdir(dir)).sort(), ["ctrexec-00000000000000a1.json", liveTmp].sort());
    await rm(join(dir, "ctrexec-00000000000000a1.json"));
    await rm(join(dir, liveTmp));
    await assertNetClean(ex);
  });

  it("prune removes the pooled namespaces of a dead executor", async () => {
    const dir = join(env.stateDir, "net", env.namespace);
    await mkdir(dir, { recursive: true });
    const mod = (p: string) => JSON.stringify(new URL(p, import.meta.url).href);
    const script = `
      const { ContainerdExecutor } = await import(${mod("../../src/executor/executor.js")});
      const { bindMountable } = await import(${mod("../../src/executor/mountables.js")});
      const ex = await ContainerdExecutor.create({ namespace: ${JSON.stringify(env.namespace)}, root: ${JSON.stringify(env.stateDir)}, fifoRoot: ${JSON.stringify(env.fifoRoot)}, defaultNetwork: "bridge",
        bridge: { configDir: ${JSON.stringify(cniConfigDir)}, networkName: ${JSON.stringify(networkName)}, bridge: ${JSON.stringify(bridge)}, subnet: ${JSON.stringify(subnet)}, ipMasq: false, poolSize: 2 } });
      await ex.run({ root: { source: bindMountable(${JSON.stringify(env.rootfs)}) }, process: { meta: { args: ["true"] } } });
      await new Promise((r) => setTimeout(r, 1500));
      process.kill(process.pid, "SIGKILL");`;
    await run(process.execPath, ["--input-type=module", "-e", script]).catch(() => {});
    assert.ok((await readdir(dir)).length > 0, "the dead executor left no pooled namespace to prune");
    const ex = await executor({ defaultNetwork: "host" });
    const removed = await ex.prune();
    assert.ok(
      removed.some((l) => l.startsWith("network namespace ")),
      removed.join("\n"),
    );
    await assertNetClean(ex);
  });
});
