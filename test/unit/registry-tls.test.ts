import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { UnavailableError } from "../../src/errors.js";
import { RegistryClient } from "../../src/registry/client.js";
import { parseReference } from "../../src/registry/reference.js";
import type { RegistryOptions } from "../../src/registry/types.js";
import { FakeRegistry, makeTestCertificates, type TestCertificates } from "../helpers/fake-registry.js";

let dir: string;
let certs: TestCertificates;
let tlsFake: FakeRegistry;
let plainFake: FakeRegistry;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ctrexec-registry-tls-"));
  certs = await makeTestCertificates(dir);
  tlsFake = await FakeRegistry.start({ tls: { key: certs.keyPem, cert: certs.certPem } });
  tlsFake.putImage("x", "t", { layers: ["over tls"] });
  plainFake = await FakeRegistry.start();
  plainFake.putImage("x", "t", { layers: ["over http"] });
});
after(async () => {
  await Promise.all([tlsFake?.close(), plainFake?.close()]);
  await rm(dir, { recursive: true, force: true });
});

const noWait: NonNullable<RegistryOptions["sleep"]> = async () => {};

describe("RegistryClient over TLS", () => {
  it("refuses a certificate from an unknown CA, without retrying and without falling back to plain HTTP", async () => {
    const waits: number[] = [];
    const c = new RegistryClient(parseReference(`${tlsFake.host}/x:t`), { sleep: async (ms) => void waits.push(ms) });
    await assert.rejects(c.resolve(), (e: unknown) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.match(e.message, /TLS certificate is not trusted .*caCerts or NODE_EXTRA_CA_CERTS/);
      return true;
    });
    assert.deepEqual(waits, []);
    assert.equal(tlsFake.requests.length, 0);
  });

  it("trusts the CA given in caCerts (string or Buffer), on top of the system's", async () => {
    for (const ca of [certs.caPem, Buffer.from(certs.caPem)]) {
      const c = new RegistryClient(parseReference(`${tlsFake.host}/x:t`), { caCerts: [ca], sleep: noWait });
      const { descriptor } = await c.resolve();
      assert.equal(descriptor.mediaType, "application/vnd.oci.image.manifest.v1+json");
    }
    assert.ok(tlsFake.requests.length >= 2);
  });

  it("honours NODE_EXTRA_CA_CERTS (read by ctrexec itself, since a `ca` option would drop it)", async () => {
    const clientModule = new URL("../../src/registry/client.js", import.meta.url).href;
    const referenceModule = new URL("../../src/registry/reference.js", import.meta.url).href;
    const script = `
      const { RegistryClient } = await import(${JSON.stringify(clientModule)});
      const { parseReference } = await import(${JSON.stringify(referenceModule)});
      const c = new RegistryClient(parseReference(process.argv[1]), { maxAttempts: 1 });
      const { descriptor } = await c.resolve();
      process.stdout.write(descriptor.digest);`;
    const run = (env: NodeJS.ProcessEnv) =>
      new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
        const child = spawn(process.execPath, ["--input-type=module", "-e", script, `${tlsFake.host}/x:t`], {
          env,
          stdio: ["ignore", "pipe", "pipe"],
        });
        let out = "";
        let err = "";
        child.stdout.on("data", (d: Buffer) => {
          out += d;
        });
        child.stderr.on("data", (d: Buffer) => {
          err += d;
        });
        child.on("close", (code) => resolve({ code, out, err }));
      });
    const withCa = await run({ ...process.env, NODE_EXTRA_CA_CERTS: certs.caFile });
    assert.equal(withCa.code, 0, withCa.err);
    assert.match(withCa.out, /^sha256:[a-f0-9]{64}$/);
    const { NODE_EXTRA_CA_CERTS: _, ...without } = process.env;
    const withoutCa = await run(without);
    assert.notEqual(withoutCa.code, 0);
    assert.match(withoutCa.err, /not trusted/);
  });

  it("falls back to plain HTTP for a loopback registry that does not speak TLS, and stays there", async () => {
    const c = new RegistryClient(parseReference(`${plainFake.host}/x:t`), { sleep: noWait });
    await c.resolve();
    await c.resolve();
    assert.equal(plainFake.requests.length, 2, "one manifest GET per resolve");
    assert.equal(plainFake.registry.clientErrors, 1, "one TLS attempt per client");
  });
});
