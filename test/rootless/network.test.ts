import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, it } from "node:test";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/errors.js";
import { withEnv } from "./env.js";

/** Interface names in /proc/net/dev text (the caller's network namespace's). */
function interfaces(procNetDev: string): string[] {
  return procNetDev
    .split("\n")
    .slice(2)
    .map((l) => l.split(":")[0]?.trim() ?? "")
    .filter((n) => n !== "")
    .sort();
}

describe("rootless: networks and what rootless refuses (inside rootlesskit's namespaces)", () => {
  it("network none has only lo; host is rootlesskit's network, here (--net=host) the host's", () =>
    withEnv("net", async (env) => {
      assert.deepEqual(interfaces(await env.output("cat /proc/net/dev", { network: "none" })), ["lo"]);
      const host = interfaces(await env.output("cat /proc/net/dev", { network: "host" }));
      // rootlesskit shares the host's network namespace with us; the outer test names the host's interfaces too.
      assert.deepEqual(host, interfaces(readFileSync("/proc/net/dev", "utf8")));
      const outer = process.env["CTREXEC_TEST_HOST_INTERFACES"];
      if (outer !== undefined) assert.deepEqual(host, outer.split(",").sort());
      assert.ok(host.length > 1, `only ${host.join(",")}`);
    }));

  it("refuses limits on cgroup v1, a bridge network and a user namespace per run, creating nothing", () =>
    withEnv("refuse", async (env) => {
      const cgroup2 = readFileSync("/proc/self/mountinfo", "utf8")
        .split("\n")
        .some((l) => / - cgroup2 /.test(l) && / \/sys\/fs\/cgroup /.test(l));
      if (!cgroup2) {
        const limits = await env.sh("true", { resources: { memory: 64 << 20 } }).catch((e: unknown) => e);
        assert.ok(limits instanceof FailedPreconditionError, String(limits));
        assert.match(limits.message, /cgroup v1/);
        const parent = await env.sh("true", { cgroupParent: "ctrexec-rl" }).catch((e: unknown) => e);
        assert.ok(parent instanceof FailedPreconditionError, String(parent));
        assert.match(parent.message, /cgroup v1/);
      }
      const bridge = await env.sh("true", { network: "bridge" }).catch((e: unknown) => e);
      assert.ok(bridge instanceof FailedPreconditionError, String(bridge));
      const userns = await env.sh("true", { userns: "auto" }).catch((e: unknown) => e);
      assert.ok(userns instanceof InvalidArgumentError, String(userns));
      assert.equal(userns.field, "userns");
    }));
});
