import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { loadBundle, writeCodeCache } from "../../src/cli/code-cache.js";

const dir = mkdtempSync(join(tmpdir(), "ctrexec-code-cache-"));
after(() => rmSync(dir, { recursive: true, force: true }));

/** A bundle whose functions are compiled by the warm-up, so that a cache used for the wrong source shows it. */
const SOURCE = `"use strict";
exports.answer = function answer() { return 42; };
exports.where = function where() { return [__filename, __dirname, typeof require("node:path").join]; };
${Array.from({ length: 200 }, (_, i) => `exports.f${i} = function f${i}(x) { return x * ${i} + ${i}; };`).join("\n")}
`;

let n = 0;
/** A fresh bundle and its cache, made in this process (so with this process's flags). */
async function fixture(): Promise<{ file: string; cache: string }> {
  // Each its own source: V8 would otherwise find one compiled earlier in this process and not read the cache.
  const file = join(dir, `bundle-${++n}.cjs`);
  writeFileSync(file, `${SOURCE}// ${n}\n`);
  await writeCodeCache(file, `${file}.cache`, async (e) => {
    for (const f of Object.values(e)) if (typeof f === "function") f(1);
  });
  return { file, cache: `${file}.cache` };
}

/** The bytes with one in the middle (in V8's data) inverted. */
function flipped(bytes: Buffer): Buffer {
  const at = bytes.length >> 1;
  bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);
  return bytes;
}

function answer(loaded: { exports: Record<string, unknown> }): unknown {
  return (loaded.exports["answer"] as () => unknown)();
}

describe("CLI code cache", () => {
  it("uses a cache made for the bundle, which runs with CommonJS's variables", async () => {
    const { file, cache } = await fixture();
    const loaded = loadBundle(file, cache);
    assert.equal(loaded.cache, "accepted");
    assert.equal(answer(loaded), 42);
    assert.deepEqual((loaded.exports["where"] as () => unknown)(), [file, dir, "function"]);
  });

  it("compiles the bundle itself when the cache is missing", async () => {
    const { file, cache } = await fixture();
    rmSync(cache);
    const loaded = loadBundle(file, cache);
    assert.equal(loaded.cache, "missing");
    assert.equal(answer(loaded), 42);
  });

  it("refuses the cache of another bundle of the same length (V8 alone would take it)", async () => {
    const { file, cache } = await fixture();
    writeFileSync(file, readFileSync(file, "utf8").replace("return 42;", "return 43;"));
    const loaded = loadBundle(file, cache);
    assert.equal(loaded.cache, "stale");
    assert.equal(answer(loaded), 43, "the bundle's code runs, not the cached one");
  });

  it("refuses a damaged cache (V8 does not check its data, and would crash on it)", async () => {
    const { file, cache } = await fixture();
    const raw = flipped(readFileSync(cache));
    writeFileSync(cache, raw);
    assert.equal(loadBundle(file, cache).cache, "corrupt");
    writeFileSync(cache, "ctrexec-code-cache 1 nonsense\n");
    assert.equal(loadBundle(file, cache).cache, "corrupt");
    writeFileSync(cache, raw.subarray(0, raw.length - 1));
    const loaded = loadBundle(file, cache);
    assert.equal(loaded.cache, "corrupt");
    assert.equal(answer(loaded), 42);
  });

  it("runs the bundle when V8 refuses a cache made under other flags", () => {
    // Made only in the child: compiled here once, the source would come from V8's in-memory cache instead.
    const file = join(dir, "bundle-other-flags.cjs");
    const cache = `${file}.cache`;
    writeFileSync(file, `${SOURCE}// other flags\n`);
    const url = new URL("../../src/cli/code-cache.js", import.meta.url).href;
    const make = `import { writeCodeCache } from ${JSON.stringify(url)}; await writeCodeCache(${JSON.stringify(file)}, ${JSON.stringify(cache)}, async () => {});`;
    const r = spawnSync(process.execPath, ["--no-opt", "--input-type=module", "-e", make], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const loaded = loadBundle(file, cache);
    assert.equal(loaded.cache, "rejected");
    assert.equal(answer(loaded), 42);
  });
});

describe("ctrexec with its code cache", () => {
  const built = fileURLToPath(new URL("../../src/cli/", import.meta.url));
  const pkg = fileURLToPath(new URL("../../../package.json", import.meta.url));

  /** A copy of the built CLI (the bin, the bundle, its cache) with the package.json it reads its version from. */
  function copyOfCli(): string {
    const root = mkdtempSync(join(dir, "cli-"));
    const cli = join(root, "dist/src/cli");
    mkdirSync(cli, { recursive: true });
    copyFileSync(pkg, join(root, "package.json"));
    for (const name of ["ctrexec.mjs", "ctrexec.cjs", "ctrexec.cjs.cache"]) copyFileSync(join(built, name), join(cli, name));
    return cli;
  }

  const ctrexec = (cli: string, ...argv: string[]) => spawnSync(process.execPath, [join(cli, "ctrexec.mjs"), ...argv], { encoding: "utf8" });
  const status = (cli: string) => {
    const url = new URL("../../src/cli/code-cache.js", import.meta.url).href;
    const bundle = join(cli, "ctrexec.cjs");
    const code = `import { loadBundle } from ${JSON.stringify(url)}; console.log(loadBundle(${JSON.stringify(bundle)}, ${JSON.stringify(`${bundle}.cache`)}).cache);`;
    return spawnSync(process.execPath, ["--input-type=module", "-e", code], { encoding: "utf8" }).stdout.trim();
  };

  it("is built with a cache a plain node accepts, and answers the same with a stale, damaged or missing one", () => {
    const cli = copyOfCli();
    assert.equal(status(cli), "accepted");
    const want = ctrexec(cli, "--version");
    assert.equal(want.status, 0, want.stderr);
    assert.match(want.stdout, /^ctrexec \d+\.\d+\.\d+\n$/);
    const help = ctrexec(cli, "--help");
    assert.equal(help.status, 0, help.stderr);
    assert.match(help.stdout, /^Usage: ctrexec /);

    const cache = join(cli, "ctrexec.cjs.cache");
    writeFileSync(cache, flipped(readFileSync(cache)));
    assert.equal(status(cli), "corrupt");
    for (const [argv, r] of [
      [["--version"], want],
      [["--help"], help],
    ] as const) {
      const got = ctrexec(cli, ...argv);
      assert.deepEqual([got.status, got.stdout, got.stderr], [r.status, r.stdout, r.stderr], `corrupt cache: ${argv.join(" ")}`);
    }

    copyFileSync(join(built, "ctrexec.cjs.cache"), cache);
    writeFileSync(join(cli, "ctrexec.cjs"), `${readFileSync(join(built, "ctrexec.cjs"), "utf8")}// edited\n`);
    assert.equal(status(cli), "stale");
    const stale = ctrexec(cli, "--version");
    assert.deepEqual([stale.status, stale.stdout, stale.stderr], [want.status, want.stdout, want.stderr]);

    rmSync(cache);
    assert.equal(status(cli), "missing");
    const none = ctrexec(cli, "--version");
    assert.deepEqual([none.status, none.stdout, none.stderr], [want.status, want.stdout, want.stderr]);
  });
});
