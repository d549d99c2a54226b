import assert from "node:assert/strict";
import { mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fifoImplementation, makeFifos } from "../../src/containerd/fifo.js";

describe("makeFifos", () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ctrexec-fifo-"));
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it("uses the native addon when it is built", () => {
    assert.equal(fifoImplementation(), "native", "the addon should be built by npm run build");
  });

  for (const implementation of ["native", "spawn"] as const) {
    it(`creates FIFOs with mode 0600 (${implementation})`, async () => {
      const paths = [join(dir, `${implementation}-a`), join(dir, `${implementation}-b`)];
      await makeFifos(paths, { implementation });
      for (const p of paths) {
        const st = await stat(p);
        assert.ok(st.isFIFO(), `${p} is not a FIFO`);
        assert.equal(st.mode & 0o777, 0o600);
      }
    });

    it(`fails when the path exists (${implementation})`, async () => {
      const p = join(dir, `${implementation}-exists`);
      await writeFile(p, "");
      await assert.rejects(makeFifos([p], { implementation }), /EEXIST|File exists/);
    });
  }
});
