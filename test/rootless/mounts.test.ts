import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, it } from "node:test";
import { ExitError } from "../../src/errors.js";
import { bindMountable, tmpfsMountable } from "../../src/executor/mountables.js";
import { Collect } from "../helpers/streams.js";
import { withEnv } from "./env.js";

describe("rootless: mounts (inside rootlesskit's namespaces)", () => {
  it("binds a user-owned host dir read-write and read-only, and mounts a tmpfs", () =>
    withEnv("mounts", async (env) => {
      const dir = await mkdtemp(join(tmpdir(), "ctrexec-rl-bind-"));
      try {
        await writeFile(join(dir, "in"), "from the host\n");
        const out = await env.output(
          "cat /rw/in; echo from the container > /rw/out; cat /ro/in; (echo x > /ro/no) 2>/dev/null || echo ro refused; " +
            "echo t > /scratch/f && cat /scratch/f; grep ' /scratch ' /proc/mounts | cut -d' ' -f1,3",
          {},
          {
            mounts: [
              { source: bindMountable(dir), dest: "/rw" },
              { source: bindMountable(dir), dest: "/ro", readonly: true },
              { source: tmpfsMountable({ size: 1 << 20 }), dest: "/scratch" },
            ],
          },
        );
        assert.equal(out, "from the host\nfrom the host\nro refused\nt\ntmpfs tmpfs\n");
        assert.equal(await readFile(join(dir, "out"), "utf8"), "from the container\n");
        // Container root is this user namespace's root: its files are ours (the test user's on the host).
        assert.equal((await stat(join(dir, "out"))).uid, 0);
        assert.equal(existsSync(join(dir, "no")), false);
        // A read-only root: the root is not writable, the mounts under it still are.
        const stderr = new Collect();
        const err = await env
          .sh("touch /x", {}, { root: { source: bindMountable(await env.rootfs()), readonly: true }, stderr })
          .catch((e: unknown) => e);
        assert.ok(err instanceof ExitError, String(err));
        assert.match(stderr.text, /Read-only file system/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    }));

  it("a container's root cannot modify, append to, chmod, remove or replace a host root's file bound into it", () =>
    withEnv("hostile", async (env) => {
      // The outer test (host root) made this dir and file, both root-owned, and checks them itself afterwards.
      const dir = process.env["CTREXEC_TEST_HOSTILE_DIR"];
      assert.ok(dir, "CTREXEC_TEST_HOSTILE_DIR is not set (the outer test sets it)");
      const before = await readFile(join(dir, "secret"), "utf8");
      const attempts = [
        ["write", "echo pwned > /h/secret"],
        ["append", "echo pwned >> /h/secret"],
        ["truncate", ": > /h/secret"],
        ["chmod", "chmod 666 /h/secret"],
        ["chown", "chown 0:0 /h/secret"],
        ["touch", "touch /h/secret"],
        ["remove", "rm -f /h/secret"],
        ["replace", "echo pwned > /tmp/evil && mv -f /tmp/evil /h/secret"],
        ["link", "ln -f /tmp/evil /h/secret"],
        ["create", "echo pwned > /h/new"],
        ["file write", "echo pwned > /f"],
        ["file append", "echo pwned >> /f"],
        ["file chmod", "chmod 666 /f"],
      ];
      const script = attempts.map(([what, cmd]) => `if (${cmd}) 2>/dev/null; then echo "${what}: DONE"; else echo "${what}: refused"; fi`).join("\n");
      const out = await env.output(
        `id -u; stat -c %u:%a /h/secret; ${script}; cat /h/secret`,
        {},
        {
          mounts: [
            { source: bindMountable(dir), dest: "/h" },
            { source: bindMountable(join(dir, "secret")), dest: "/f" },
          ],
        },
      );
      const lines = out.trim().split("\n");
      assert.equal(lines[0], "0", "the attempts must run as the container's root");
      // Host root is not mapped in the user namespace: its file shows as the overflow uid.
      assert.equal(lines[1], "65534:644");
      assert.deepEqual(
        lines.slice(2, -1),
        attempts.map(([what]) => `${what}: refused`),
      );
      assert.equal(`${lines.at(-1)}\n`, before);
      assert.equal(await readFile(join(dir, "secret"), "utf8"), before);
    }));
});
