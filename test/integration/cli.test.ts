import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import type { IdmapCheck } from "../../src/executor/diagnose-userns.js";

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

  it("info says whether user namespaces work, and idmapped mounts on each directory a userns run maps", async () => {
    type Info = { stateDir: string; userns: { supported: boolean; maxUserNamespaces: number | null; idmap: IdmapCheck[] } };
    const r = await ctrexec(["info", "--format", "json"]);
    assert.equal(r.code, 0, r.stderr);
    const info = JSON.parse(r.stdout) as Info;
    // This host's kernel (6.x, user namespaces on) and its ext4 allow both; a check that lies fails here.
    assert.equal(info.userns.supported, true);
    assert.ok(info.userns.maxUserNamespaces! > 0);
    assert.deepEqual(
      info.userns.idmap.map((c) => c.what),
      ["state dir", "default rootfs", "snapshotter overlayfs"],
    );
    assert.equal(info.userns.idmap[0]!.path, info.stateDir);
    for (const c of info.userns.idmap) {
      assert.notEqual(c.fsType, "?", JSON.stringify(c));
      if (c.fsType === "ext4") assert.equal(c.supported, true, JSON.stringify(c));
    }
    const text = (await ctrexec(["info"])).stdout;
    assert.match(text, /^user namespaces: +yes \(up to \d+\)$/m);
    // As root, the system daemon: not rootless, and how an unprivileged user gets there.
    assert.match(text, /^rootless: +no \(as an unprivileged user: ctrexec rootless start\)$/m);
    assert.equal((JSON.parse((await ctrexec(["info", "--format", "json"])).stdout) as { rootless: unknown }).rootless, null);
    assert.match(text, new RegExp(`^idmapped mounts: +(yes|NO) on state dir ${info.stateDir} \\(`, "m"));

    // procfs refuses idmapped mounts: a state dir there (never created by info) shows the refusal and its reason.
    const onProc = await ctrexec(["--root", "/proc/ctrexec-h3-none", "info", "--format", "json"]);
    assert.equal(onProc.code, 0, onProc.stderr);
    const state = (JSON.parse(onProc.stdout) as Info).userns.idmap[0]!;
    assert.equal(state.probed, "/proc");
    assert.equal(state.fsType, "proc");
    assert.equal(state.supported, false);
    assert.match(state.errno ?? "", /^E[A-Z]+$/);
    assert.ok(state.reason, "a refusal says why");
    const onProcText = (await ctrexec(["--root", "/proc/ctrexec-h3-none", "info"])).stdout;
    assert.match(onProcText, /^idmapped mounts: +NO on state dir \/proc\/ctrexec-h3-none \(not made yet: probed \/proc\) \(proc\): E[A-Z]+: .+$/m);
  });

  it("refuses bad --userns, --uidmap, --gidmap and idmap volumes with 125 and one line, before reaching containerd", async () => {
    const cases: [string[], RegExp][] = [
      [["--userns", "keep-id"], /^ctrexec: invalid argument "keep-id" for "--userns": /],
      [["--userns=auto", "--uidmap", "0:300000:65536"], /^ctrexec: --userns and --uidmap cannot be used together/],
      [["--gidmap", "0:300000"], /--gidmap/],
      [["-v", "/tmp:/t:idmap"], /^ctrexec: --volume \/t with idmap needs a user namespace/],
      [["--userns", "auto", "-v", "/tmp:/t:ro,rw"], /^ctrexec: invalid argument "\/tmp:\/t:ro,rw" for "--volume": ro and rw contradict/],
    ];
    for (const [flags, message] of cases) {
      // An unreachable address: a flag error must come first, so this never gets as far as containerd.
      const r = await ctrexec(["--address", "/run/ctrexec-test-nonexistent.sock", "run", ...flags, "true"]);
      assert.equal(r.code, 125, flags.join(" "));
      assert.match(r.stderr, message);
      assert.equal(r.stderr.trim().split("\n").length, 1, r.stderr);
    }
  });

  it("exits 125 on a bad flag or command", async () => {
    assert.equal((await ctrexec(["--bogus"])).code, 125);
    const r = await ctrexec(["frobnicate"]);
    assert.equal(r.code, 125);
    assert.match(r.stderr, /unknown command "frobnicate"/);
  });
});
