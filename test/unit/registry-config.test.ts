import assert from "node:assert/strict";
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { FailedPreconditionError, InvalidArgumentError } from "../../src/errors.js";
import { lookupCredentials } from "../../src/registry/docker-config.js";
import { loadCredentials, removeLogin, saveLogin } from "../../src/registry/login.js";

let root: string;
let n = 0;
async function freshDir(): Promise<string> {
  const d = join(root, `c${n++}`);
  await mkdir(d);
  return d;
}
const b64 = (s: string) => Buffer.from(s).toString("base64");

before(async () => {
  root = await mkdtemp(join(tmpdir(), "ctrexec-registry-config-"));
});
after(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("docker config.json", () => {
  it("reads auths with base64 auth or username/password, under every key docker accepts", async () => {
    const dir = await freshDir();
    await writeFile(
      join(dir, "config.json"),
      JSON.stringify({
        auths: {
          "https://index.docker.io/v1/": { auth: b64("hubuser:hub:pass:with:colons") },
          "https://reg.example:5000": { username: "u2", password: "p2" },
          "other.example": { auth: b64("o:p") },
        },
      }),
    );
    assert.deepEqual(await loadCredentials("docker.io", { dockerConfigDir: dir }), { username: "hubuser", password: "hub:pass:with:colons" });
    assert.deepEqual(await loadCredentials("index.docker.io", { dockerConfigDir: dir }), { username: "hubuser", password: "hub:pass:with:colons" });
    assert.deepEqual(await loadCredentials("reg.example:5000", { dockerConfigDir: dir }), { username: "u2", password: "p2" });
    assert.deepEqual(await loadCredentials("other.example", { dockerConfigDir: dir }), { username: "o", password: "p" });
    assert.equal(await loadCredentials("reg.example", { dockerConfigDir: dir }), undefined, "another port is another registry");
    for (const key of ["docker.io", "index.docker.io", "registry-1.docker.io"]) {
      const d = await freshDir();
      await writeFile(join(d, "config.json"), JSON.stringify({ auths: { [key]: { auth: b64("a:b") } } }));
      assert.deepEqual(await loadCredentials("docker.io", { dockerConfigDir: d }), { username: "a", password: "b" }, key);
    }
  });

  it("finds the file through DOCKER_CONFIG, and is quiet when there is none", async () => {
    const dir = await freshDir();
    await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { "r.example": { auth: b64("env:user") } } }));
    const saved = process.env["DOCKER_CONFIG"];
    process.env["DOCKER_CONFIG"] = dir;
    try {
      assert.deepEqual(await loadCredentials("r.example"), { username: "env", password: "user" });
    } finally {
      if (saved === undefined) delete process.env["DOCKER_CONFIG"];
      else process.env["DOCKER_CONFIG"] = saved;
    }
    assert.equal(await loadCredentials("r.example", { dockerConfigDir: join(dir, "none") }), undefined);
  });

  it("names a credential helper it does not run", async () => {
    const dir = await freshDir();
    await writeFile(join(dir, "config.json"), JSON.stringify({ credsStore: "desktop", credHelpers: { "gcr.io": "gcloud" }, auths: {} }));
    assert.equal((await lookupCredentials("gcr.io", dir)).helper, "docker-credential-gcloud");
    assert.equal((await lookupCredentials("docker.io", dir)).helper, "docker-credential-desktop");
    assert.equal((await lookupCredentials("docker.io", dir)).credentials, undefined);
  });

  it("refuses a broken file instead of guessing (and never overwrites it)", async () => {
    const dir = await freshDir();
    await writeFile(join(dir, "config.json"), "{ not json");
    await assert.rejects(
      loadCredentials("r.example", { dockerConfigDir: dir }),
      (e: unknown) => e instanceof FailedPreconditionError && /not valid JSON/.test(String(e)),
    );
    await assert.rejects(saveLogin("r.example", { username: "u", password: "p" }, { dockerConfigDir: dir }), FailedPreconditionError);
    assert.equal(await readFile(join(dir, "config.json"), "utf8"), "{ not json");
    await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { "r.example": { auth: b64("nocolon") } } }));
    await assert.rejects(loadCredentials("r.example", { dockerConfigDir: dir }), /not base64 of user:password/);
  });

  it("saves with mode 0600, atomically, under docker's key, keeping every other key and entry", async () => {
    const dir = await freshDir();
    const original = {
      auths: { "other.example": { auth: b64("x:y"), email: "kept@example" } },
      credHelpers: { "gcr.io": "gcloud" },
      psFormat: "table {{.ID}}",
      experimental: "enabled",
    };
    await writeFile(join(dir, "config.json"), JSON.stringify(original), { mode: 0o644 });
    const path = await saveLogin("index.docker.io", { username: "me", password: "pw" }, { dockerConfigDir: dir });
    assert.equal(path, join(dir, "config.json"));
    const st = await lstat(path);
    assert.equal(st.mode & 0o777, 0o600);
    const written = JSON.parse(await readFile(path, "utf8"));
    assert.deepEqual(written, {
      ...original,
      auths: { ...original.auths, "https://index.docker.io/v1/": { auth: b64("me:pw") } },
    });
    assert.match(await readFile(path, "utf8"), /^\{\n\t"auths"/, "tab-indented, as docker writes it");
    assert.deepEqual(await readdir(dir), ["config.json"], "no temporary file is left");

    await saveLogin("127.0.0.1:5000", { username: "a", password: "b" }, { dockerConfigDir: dir });
    assert.deepEqual(JSON.parse(await readFile(path, "utf8")).auths["127.0.0.1:5000"], { auth: b64("a:b") });
    assert.deepEqual(await loadCredentials("docker.io", { dockerConfigDir: dir }), { username: "me", password: "pw" });
  });

  it("creates the directory (0700) and file when there is none, and writes through a symlinked config.json", async () => {
    const base = await freshDir();
    const dir = join(base, "new", ".docker");
    await saveLogin("r.example", { username: "u", password: "p" }, { dockerConfigDir: dir });
    assert.equal((await lstat(dir)).mode & 0o777, 0o700);
    assert.equal((await lstat(join(dir, "config.json"))).mode & 0o777, 0o600);

    const linked = await freshDir();
    const real = join(linked, "real.json");
    await writeFile(real, JSON.stringify({ auths: {} }));
    await symlink(real, join(linked, "config.json"));
    await saveLogin("r.example", { username: "u", password: "p" }, { dockerConfigDir: linked });
    assert.ok((await lstat(join(linked, "config.json"))).isSymbolicLink(), "the link stays a link");
    assert.deepEqual(JSON.parse(await readFile(real, "utf8")).auths["r.example"], { auth: b64("u:p") });
  });

  it("removes every key naming the host on logout, and says false when there was none", async () => {
    const dir = await freshDir();
    await writeFile(
      join(dir, "config.json"),
      JSON.stringify({
        auths: { "https://index.docker.io/v1/": { auth: b64("a:b") }, "docker.io": { auth: b64("c:d") }, "r.example": { auth: b64("e:f") } },
        other: 1,
      }),
    );
    assert.equal(await removeLogin("docker.io", { dockerConfigDir: dir }), true);
    assert.deepEqual(JSON.parse(await readFile(join(dir, "config.json"), "utf8")), { auths: { "r.example": { auth: b64("e:f") } }, other: 1 });
    assert.equal(await removeLogin("docker.io", { dockerConfigDir: dir }), false);
    assert.equal(await removeLogin("r.example", { dockerConfigDir: join(dir, "missing") }), false);
  });

  it("refuses bad input by field", async () => {
    const dir = await freshDir();
    await assert.rejects(
      saveLogin("r.example", { username: "", password: "p" }, { dockerConfigDir: dir }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "username",
    );
    await assert.rejects(
      saveLogin("r.example", { username: "a:b", password: "p" }, { dockerConfigDir: dir }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "username",
    );
    await assert.rejects(
      saveLogin("r.example", { username: "u", password: "" }, { dockerConfigDir: dir }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "password",
    );
    await assert.rejects(
      saveLogin("no such host!", { username: "u", password: "p" }, { dockerConfigDir: dir }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "registry",
    );
    assert.deepEqual(await readdir(dir), []);
  });
});
