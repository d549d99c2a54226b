import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { execProcess } from "../../src/oci/exec-process.js";
import type { Process } from "../../src/oci/types.js";

const base: Process = {
  args: ["sleep", "100"],
  env: ["PATH=/bin", "A=1", "B=2"],
  cwd: "/work",
  terminal: true,
  consoleSize: { height: 10, width: 20 },
  user: { uid: 1000, gid: 1000, additionalGids: [1000] },
  capabilities: { bounding: ["CAP_CHOWN"] },
  noNewPrivileges: false,
};

describe("execProcess", () => {
  it("keeps the container's process, with the exec's command, and no terminal unless asked", () => {
    const p = execProcess(base, { args: ["ls", "-l"] });
    assert.deepEqual(p.args, ["ls", "-l"]);
    assert.equal(p.terminal, false);
    assert.equal(p.consoleSize, undefined);
    assert.equal(p.cwd, "/work");
    assert.deepEqual(p.env, base.env);
    assert.deepEqual(p.user, base.user);
    assert.deepEqual(p.capabilities, base.capabilities);
    assert.deepEqual(base.args, ["sleep", "100"], "the container's spec is not changed");
  });

  it("merges env by key (a bare key unsets), sets cwd, user and the terminal size", () => {
    const p = execProcess(base, {
      args: ["sh"],
      env: ["A=9", "B", "C=3"],
      cwd: "/tmp",
      terminal: true,
      consoleSize: { rows: 40, cols: 100 },
      user: { uid: 5, gid: 6, additionalGids: [7] },
    });
    assert.deepEqual(p.env, ["PATH=/bin", "A=9", "C=3"]);
    assert.equal(p.cwd, "/tmp");
    assert.deepEqual(p.consoleSize, { height: 40, width: 100 });
    assert.deepEqual(p.user, { uid: 5, gid: 6, additionalGids: [7] });
  });

  it("refuses what generateSpec refuses, naming the field", () => {
    const field = (input: Parameters<typeof execProcess>[1]) => {
      try {
        execProcess(base, input);
      } catch (err) {
        assert.ok(err instanceof InvalidArgumentError);
        return err.field;
      }
      assert.fail("accepted");
    };
    assert.equal(field({ args: [] }), "args");
    assert.equal(field({ args: ["a\0b"] }), "args");
    assert.equal(field({ args: ["sh"], env: ["X=\0"] }), "args");
    assert.equal(field({ args: ["sh"], cwd: "relative" }), "cwd");
    assert.equal(field({ args: ["sh"], cwd: "/tmp\0/x" }), "cwd");
    assert.equal(field({ args: ["sh"], terminal: true, consoleSize: { rows: 0, cols: 5 } }), "consoleSize");
  });
});
