// Generates src/gen/ (TypeScript message types, enums and service descriptors for @bufbuild/protobuf) from
// proto/containerd/ with buf and protoc-gen-es, both run from node_modules: no network, no protoc.
// Usage: node scripts/gen-proto.mjs          regenerate src/gen/
//        node scripts/gen-proto.mjs --check  fail if src/gen/ is not what the .proto files generate
import { spawnSync } from "node:child_process";
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const genDir = join(root, "src/gen");
const check = process.argv.includes("--check");
const HEADER =
  "// Generated from proto/containerd by `node scripts/gen-proto.mjs` (buf, protoc-gen-es). Do not edit by hand:\n" +
  "// change the .proto file and run the script again.\n";

/** File name -> content of what the .proto files generate now (buf.gen.yaml says how). */
function generate() {
  const tmp = mkdtempSync(join(tmpdir(), "ctrexec-gen-proto-"));
  try {
    const buf = join(root, "node_modules/@bufbuild/buf/bin/buf");
    const r = spawnSync(buf, ["generate", "--template", "buf.gen.yaml", "-o", tmp], { cwd: root, stdio: ["ignore", "inherit", "inherit"] });
    if (r.status !== 0) throw new Error(`buf generate failed (${r.error?.message ?? `exit ${r.status}`})`);
    const out = new Map();
    const dir = join(tmp, "src/gen");
    for (const name of readdirSync(dir).sort()) out.set(name, HEADER + readFileSync(join(dir, name), "utf8"));
    return out;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

function current() {
  const out = new Map();
  let names = [];
  try {
    names = readdirSync(genDir);
  } catch {}
  for (const name of names.sort()) {
    const path = join(genDir, name);
    // A directory is never generated: report it as a file that should not be there.
    out.set(name, statSync(path).isDirectory() ? "(a directory)" : readFileSync(path, "utf8"));
  }
  return out;
}

const want = generate();
const have = current();
if (check) {
  const stale = [...new Set([...want.keys(), ...have.keys()])].filter((n) => want.get(n) !== have.get(n));
  if (stale.length > 0) {
    console.error(`src/gen/ is out of date with proto/ (${stale.join(", ")}): run node scripts/gen-proto.mjs`);
    process.exit(1);
  }
} else {
  mkdirSync(genDir, { recursive: true });
  for (const name of have.keys()) if (!want.has(name)) rmSync(join(genDir, name));
  for (const [name, text] of want) if (have.get(name) !== text) writeFileSync(join(genDir, name), text);
}
