import assert from "node:assert/strict";
import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { EnvFiles } from "../../src/executor/env-files.js";
import { buildResolvConf, DEFAULT_NAMESERVERS, resolvConfSource } from "../../src/oci/resolv-conf.js";

const defaults = DEFAULT_NAMESERVERS.map((n) => `nameserver ${n}\n`).join("");

describe("buildResolvConf (reference §6.1)", () => {
  it("uses the public defaults when there is no source, in any mode", () => {
    assert.equal(buildResolvConf("", { hostNetwork: false }).content, defaults);
    assert.equal(buildResolvConf("", { hostNetwork: true }).content, defaults);
    assert.equal(buildResolvConf("", { hostNetwork: false }).usedDefaultNameservers, true);
  });

  it("keeps a non-loopback nameserver in both modes", () => {
    for (const hostNetwork of [false, true]) {
      assert.equal(buildResolvConf("nameserver 192.168.65.5\n", { hostNetwork }).content, "nameserver 192.168.65.5\n");
    }
  });

  it("keeps loopback resolvers on the host network, drops them elsewhere", () => {
    const src = "nameserver 127.0.0.11\noptions ndots:0\n";
    assert.equal(buildResolvConf(src, { hostNetwork: true }).content, src);
    assert.equal(buildResolvConf(src, { hostNetwork: false }).content, `${defaults}options ndots:0\n`);
    assert.equal(buildResolvConf("nameserver ::1\nnameserver 1.1.1.1\n", { hostNetwork: false }).content, "nameserver 1.1.1.1\n");
  });

  it("drops comments, keeps the last search line, accumulates options and keeps other lines", () => {
    const src = "# c\n; c\nsearch a b\ndomain c\nnameserver 9.9.9.9\nnameserver bogus\noptions a\noptions b\nsortlist 1.2.3.4\n";
    assert.equal(buildResolvConf(src, { hostNetwork: false }).content, "nameserver 9.9.9.9\nsearch c\noptions a b\nsortlist 1.2.3.4\n");
  });

  it("applies DNS overrides exactly, without fallback", () => {
    const src = "nameserver 127.0.0.53\nsearch x\noptions ndots:1\n";
    assert.equal(
      buildResolvConf(src, { hostNetwork: false, dns: { nameservers: ["10.11.0.1"] } }).content,
      "nameserver 10.11.0.1\nsearch x\noptions ndots:1\n",
    );
    assert.equal(
      buildResolvConf("nameserver 1.1.1.1\nsearch x\n", { hostNetwork: false, dns: { searchDomains: ["."] } }).content,
      "nameserver 1.1.1.1\n",
    );
    assert.equal(
      buildResolvConf("nameserver 1.1.1.1\noptions a\n", { hostNetwork: false, dns: { options: ["ndots:2"] } }).content,
      "nameserver 1.1.1.1\noptions ndots:2\n",
    );
  });

  it("rejects a bad nameserver with a typed error naming the field", () => {
    assert.throws(
      () => buildResolvConf("", { hostNetwork: false, dns: { nameservers: ["foo"] } }),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "dns" && /bad nameserver address: foo/.test(e.message),
    );
  });

  it("reads systemd-resolved's upstream list when /etc/resolv.conf is only its stub", () => {
    assert.equal(resolvConfSource("nameserver 127.0.0.53\n", false), "/run/systemd/resolve/resolv.conf");
    assert.equal(resolvConfSource("nameserver 127.0.0.53\n", true), "/etc/resolv.conf");
    assert.equal(resolvConfSource("nameserver 127.0.0.53\nnameserver 1.1.1.1\n", false), "/etc/resolv.conf");
  });
});

describe("EnvFiles", () => {
  let dir: string;
  let hostResolv: string;
  let systemd: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "ctrexec-env-"));
    hostResolv = join(dir, "host-resolv.conf");
    systemd = join(dir, "systemd-resolv.conf");
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const files = (dns?: { nameservers: string[] }) => new EnvFiles({ dir, dns, hostFiles: { resolvConf: hostResolv, systemdResolvConf: systemd } });

  it("writes per mode, and a new file only when the content changes (not by mtime)", async () => {
    await writeFile(hostResolv, "nameserver 127.0.0.11\n");
    const f = files();
    const sandbox = await f.resolvConf(false);
    const host = await f.resolvConf(true);
    assert.equal(await readFile(host, "utf8"), "nameserver 127.0.0.11\n");
    assert.equal(await readFile(sandbox, "utf8"), defaults);
    const ino = (await stat(host)).ino;
    await writeFile(hostResolv, "nameserver 127.0.0.11\n"); // touched, same content
    assert.equal(await f.resolvConf(true), host);
    assert.equal((await stat(host)).ino, ino, "rewritten although nothing changed");
    await writeFile(hostResolv, "nameserver 9.9.9.9\n");
    const changed = await f.resolvConf(true);
    assert.notEqual(changed, host);
    assert.equal(await readFile(changed, "utf8"), "nameserver 9.9.9.9\n");
    // A run about to mount the earlier file still finds what it was given.
    assert.equal(await readFile(host, "utf8"), "nameserver 127.0.0.11\n");
  });

  it("never gives one executor's file to another with other DNS settings in the same state dir", async () => {
    await writeFile(hostResolv, "nameserver 10.0.0.9\n");
    const custom = files({ nameservers: ["1.1.1.1"] });
    const plain = files();
    const a = await custom.resolvConf(true);
    const b = await plain.resolvConf(true);
    const again = await custom.resolvConf(true);
    assert.equal(again, a);
    assert.equal(await readFile(again, "utf8"), "nameserver 1.1.1.1\n");
    assert.equal(await readFile(b, "utf8"), "nameserver 10.0.0.9\n");
    // Two instances with the same settings (two processes) share one file.
    assert.equal(await files({ nameservers: ["1.1.1.1"] }).resolvConf(true), a);
  });

  it("follows systemd-resolved and notices a DNS config change across executors", async () => {
    await writeFile(hostResolv, "nameserver 127.0.0.53\n");
    await writeFile(systemd, "nameserver 10.0.0.2\n");
    assert.equal(await readFile(await files().resolvConf(false), "utf8"), "nameserver 10.0.0.2\n");
    assert.equal(await readFile(await files({ nameservers: ["1.2.3.4"] }).resolvConf(false), "utf8"), "nameserver 1.2.3.4\n");
  });

  it("shares one hosts file for the default hostname ('' included) and makes others per run", async () => {
    const f = files();
    const a = await f.hosts("", []);
    const b = await f.hosts("ctrexec", []);
    assert.equal(a.path, b.path);
    assert.equal(await readFile(a.path, "utf8"), "127.0.0.1\tlocalhost ctrexec\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    await a.release();
    await stat(a.path); // the shared file stays
    const c = await f.hosts("box", [{ host: "myhost", ip: "1.2.3.4" }]);
    assert.notEqual(c.path, a.path);
    assert.match(await readFile(c.path, "utf8"), /localhost box\n.*\n1\.2\.3\.4\tmyhost\n$/s);
    await c.release();
    await assert.rejects(stat(c.path), { code: "ENOENT" });
  });
});
