import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";

const cli = fileURLToPath(new URL("../../src/cli/ctrexec.mjs", import.meta.url));

function ctrexec(args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [cli, ...args], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe("ctrexec CLI basics", () => {
  it("prints its own and the daemon's version", async () => {
    const r = await ctrexec(["version"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^ctrexec \d+\.\d+\.\d+\ncontainerd \d+\.\d+/);
  });

  it("exits 125 with one helpful line when containerd is unreachable", async () => {
    const r = await ctrexec(["--address", "/run/ctrexec-test-nonexistent.sock", "version"]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /^ctrexec: containerd is not reachable at \/run\/ctrexec-test-nonexistent\.sock/);
    assert.equal(r.stderr.trim().split("\n").length, 1);
  });

  it("info reports containerd, the runtime and the shim launcher it gives containerd", async () => {
    const r = await ctrexec(["info", "--format", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as { containerd: { reachable: boolean }; runtime: { name: string; shimLauncher: string | null } };
    assert.equal(info.containerd.reachable, true);
    assert.equal(info.runtime.name, "io.containerd.runc.v2");
    assert.equal(info.runtime.shimLauncher, fileURLToPath(new URL("../../../build/ctrexec-shim", import.meta.url)));
    const text = await ctrexec(["info"]);
    assert.match(text.stdout, /^shim launcher: +\/\S+\/build\/ctrexec-shim$/m);
  });

  it("CTREXEC_SHIM_LAUNCHER turns the launcher off, and a bad value is an input error (125)", async () => {
    const off = JSON.parse((await ctrexec(["info", "--format", "json"], { CTREXEC_SHIM_LAUNCHER: "off" })).stdout) as {
      runtime: { shimLauncher: string | null };
    };
    assert.equal(off.runtime.shimLauncher, null);
    const bad = await ctrexec(["run", "--rm", "true"], { CTREXEC_SHIM_LAUNCHER: "build/ctrexec-shim" });
    assert.equal(bad.code, 125);
    assert.match(bad.stderr, /CTREXEC_SHIM_LAUNCHER=build\/ctrexec-shim: use "off" or the absolute path of an executable file/);
  });

  it("exits 125 on a bad flag or command", async () => {
    assert.equal((await ctrexec(["--bogus"])).code, 125);
    const r = await ctrexec(["frobnicate"]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /unknown command "frobnicate"/);
  });
});
