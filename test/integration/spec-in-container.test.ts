import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { EnvFiles } from "../../src/executor/env-files.js";
import { capabilityMask } from "../../src/oci/capabilities.js";
import { detectHostFeatures } from "../../src/oci/host-features.js";
import { tmpfsMount } from "../../src/oci/mounts.js";
import { generateSpec, type SpecInput } from "../../src/oci/spec.js";
import { createTestEnv, type TestEnv } from "../helpers/env.js";
import { runTask } from "../helpers/run-task.js";
import { Collect } from "../helpers/streams.js";

describe("the generated spec does what it says, in real containers", () => {
  let env: TestEnv;
  let files: EnvFiles;
  before(async () => {
    env = await createTestEnv("spec");
    files = new EnvFiles({ dir: env.stateDir });
  });
  after(async () => {
    await env.assertNoLeaks();
    await env.dispose();
  });

  async function run(script: string, input: Partial<SpecInput> = {}): Promise<{ code: number; out: string; err: string }> {
    const id = env.uniqueId("spec");
    const hosts = await files.hosts(input.hostname ?? "", []);
    const spec = generateSpec(
      {
        id,
        namespace: env.namespace,
        args: ["sh", "-c", script],
        user: { uid: 0, gid: 0, additionalGids: [] },
        resolvConfPath: await files.resolvConf(false),
        hostsPath: hosts.path,
        ...input,
      },
      detectHostFeatures(),
    );
    const stdout = new Collect();
    const stderr = new Collect();
    const { exitStatus } = await runTask(env.client, {
      id,
      spec,
      rootfs: [{ type: "bind", source: env.rootfs, options: ["rbind"] }],
      fifoRoot: env.fifoRoot,
      streams: { stdout, stderr },
    });
    await hosts.release();
    return { code: exitStatus, out: stdout.text, err: stderr.text };
  }

  it("gives a sandboxed process exactly containerd's default capabilities", async () => {
    const r = await run("grep CapEff /proc/self/status");
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^CapEff:\s+00000000a80425fb$/m);
  });

  it("forbids new namespaces in sandbox mode and allows them in insecure mode", async () => {
    const sandbox = await run("unshare -n true");
    assert.notEqual(sandbox.code, 0, "unshare worked in the sandbox");
    const insecure = await run("unshare -n true", { security: "insecure" });
    assert.equal(insecure.code, 0, insecure.err);
  });

  it("gives an insecure process every capability ctrexec holds", async () => {
    const r = await run("grep CapEff /proc/self/status", { security: "insecure" });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, new RegExp(`^CapEff:\\s+${capabilityMask(detectHostFeatures().capabilities)}$`, "m"));
  });

  it("mounts a sized tmpfs, replacing the default /dev/shm", async () => {
    const r = await run("grep -E ' /(dev/shm|foobar) ' /proc/mounts; touch /foobar/x", {
      mounts: [tmpfsMount("/dev/shm", { size: 128 * 1024 * 1024 }), tmpfsMount("/foobar")],
    });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^tmpfs \/dev\/shm tmpfs \S*size=131072k/m);
    assert.match(r.out, /^tmpfs \/foobar tmpfs /m);
  });

  it("applies a memory limit to the container's cgroup", async () => {
    const r = await run("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes", {
      resources: { memory: 64 * 1024 * 1024 },
    });
    assert.equal(r.code, 0, r.err);
    assert.equal(r.out.trim(), "67108864");
  });

  it("masks /proc/timer_list and /proc/keys", async () => {
    const r = await run("wc -c < /proc/timer_list; wc -c < /proc/keys");
    assert.equal(r.code, 0, r.err);
    assert.deepEqual(r.out.trim().split(/\s+/), ["0", "0"]);
  });

  it("has no /run tmpfs: writes to /run persist in the rootfs", async () => {
    const r = await run("mkdir -p /run/ctrexec-test && echo foo > /run/ctrexec-test/bar");
    assert.equal(r.code, 0, r.err);
    assert.equal(await readFile(join(env.rootfs, "run/ctrexec-test/bar"), "utf8"), "foo\n");
  });

  it("applies a nofile ulimit, and otherwise inherits the runtime's limit", async () => {
    const r = await run("ulimit -n", { ulimits: [{ name: "nofile", soft: 1062, hard: 1062 }] });
    assert.equal(r.out.trim(), "1062");
    const d = await run("ulimit -n");
    assert.notEqual(d.out.trim(), "1062");
  });

  it("mounts the generated resolv.conf and hosts, and the hostname resolves", async () => {
    const r = await run("cat /etc/hosts; hostname; ping -c1 -W1 $(hostname) >/dev/null && echo resolved; grep -c nameserver /etc/resolv.conf", {
      hostname: "testtest",
    });
    assert.equal(r.code, 0, r.err);
    assert.match(r.out, /^127\.0\.0\.1\tlocalhost testtest$/m);
    assert.match(r.out, /^testtest$/m);
    assert.match(r.out, /^resolved$/m);
  });

  it("makes the root read-only when asked", async () => {
    const r = await run("touch /foo", { readonlyRootfs: true });
    assert.notEqual(r.code, 0);
    assert.match(r.err, /Read-only file system/i);
  });
});
