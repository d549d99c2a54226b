import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable } from "node:stream";
import { after, afterEach, before, describe, it } from "node:test";
import {
  CanceledError,
  DataLossError,
  FailedPreconditionError,
  NotFoundError,
  UnauthenticatedError,
  UnavailableError,
  UnknownError,
} from "../../src/errors.js";
import { RegistryClient } from "../../src/registry/client.js";
import { checkLogin } from "../../src/registry/login.js";
import { parseReference } from "../../src/registry/reference.js";
import { sleepFor } from "../../src/registry/retry.js";
import type { RegistryOptions } from "../../src/registry/types.js";
import type { LogFields, Logger } from "../../src/util/logger.js";
import { blobPath, type FakeAuth, FakeRegistry, MEDIA, manifestPath, sha256 } from "../helpers/fake-registry.js";

let fakes: FakeRegistry[] = [];
let configRoot: string;

before(async () => {
  configRoot = await mkdtemp(join(tmpdir(), "ctrexec-registry-client-"));
});
after(async () => {
  await rm(configRoot, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  fakes = [];
});

async function fake(auth?: FakeAuth): Promise<FakeRegistry> {
  const f = await FakeRegistry.start(auth ? { auth } : {});
  fakes.push(f);
  return f;
}

/** The waits the client asked for, without waiting: retries are tested by what happens, not by how long. */
function sleeps(): { waits: number[]; sleep: NonNullable<RegistryOptions["sleep"]> } {
  const waits: number[] = [];
  return {
    waits,
    sleep: async (ms, signal) => {
      if (signal?.aborted) throw new CanceledError("canceled");
      waits.push(ms);
    },
  };
}

function logger(): Logger & { lines: { level: string; message: string; fields?: LogFields }[] } {
  const lines: { level: string; message: string; fields?: LogFields }[] = [];
  const at =
    (level: string) =>
    (message: string, fields?: LogFields): void => {
      lines.push({ level, message, ...(fields ? { fields } : {}) });
    };
  return { lines, debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

function client(f: FakeRegistry, ref: string, options: RegistryOptions = {}): RegistryClient {
  // An empty config dir: no test reads the credentials of whoever runs it.
  return new RegistryClient(parseReference(`${f.host}/${ref}`), { dockerConfigDir: join(configRoot, "none"), ...options });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const isError =
  (cls: abstract new (...args: never[]) => Error, message: RegExp) =>
  (e: unknown): boolean => {
    assert.ok(e instanceof cls, `expected ${cls.name}, got ${String(e)}`);
    assert.match((e as Error).message, message);
    return true;
  };

describe("RegistryClient: manifests", () => {
  it("resolves a tag to its manifest, asking for every supported type", async () => {
    const f = await fake();
    const img = f.putImage("team/app", "v1", { layers: ["layer one"] });
    const got = await client(f, "team/app:v1").resolve();
    assert.deepEqual(got.descriptor, { mediaType: MEDIA.ociManifest, digest: img.manifests[0]!.digest, size: img.manifests[0]!.size });
    assert.equal(sha256(got.body), img.manifests[0]!.digest);
    const accept = String(f.requests.at(-1)?.headers.accept);
    for (const t of [MEDIA.ociIndex, MEDIA.ociManifest, MEDIA.dockerList, MEDIA.dockerManifest]) assert.ok(accept.includes(t), t);
  });

  it("resolves an index and a Docker list by tag, and a manifest by digest", async () => {
    const f = await fake();
    const oci = f.putImage("x", "multi", { layers: ["a"], platforms: [{ os: "linux", architecture: "s390x" }] });
    const docker = f.putImage("y", "list", { layers: ["b"], platforms: [{ os: "linux", architecture: "arm64", variant: "v8" }], docker: true });
    assert.equal((await client(f, "x:multi").resolve()).descriptor.mediaType, MEDIA.ociIndex);
    assert.equal((await client(f, "y:list").resolve()).descriptor.mediaType, MEDIA.dockerList);
    const byDigest = await client(f, `x@${oci.manifests[0]!.digest}`).resolve();
    assert.equal(byDigest.descriptor.digest, oci.manifests[0]!.digest);
    assert.equal(f.requests.at(-1)?.url, manifestPath("x", oci.manifests[0]!.digest));
    assert.ok(docker.index);
  });

  it("refuses a manifest that does not hash to the reference's digest", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    const digest = img.manifests[0]!.digest;
    f.on(manifestPath("x", digest), { kind: "wrong-digest" });
    await assert.rejects(client(f, `x@${digest}`).resolve(), isError(DataLossError, /does not match its digest/));
  });

  it("believes the content over a Docker-Content-Digest header, and says so", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "headers", headers: { "docker-content-digest": sha256("other") } });
    const log = logger();
    const got = await client(f, "x:t", { logger: log }).resolve();
    assert.equal(got.descriptor.digest, img.manifests[0]!.digest);
    assert.ok(log.lines.some((l) => l.level === "warn" && /Docker-Content-Digest/.test(l.message)));
  });

  it("takes the media type from the body when the Content-Type is generic", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"], platforms: [{ os: "linux", architecture: "amd64" }] });
    f.on(manifestPath("x", "t"), { kind: "headers", headers: { "content-type": "application/json" } }, 1);
    f.on(manifestPath("x", "t"), { kind: "headers", headers: { "content-type": null } }, 1);
    assert.equal((await client(f, "x:t").resolve()).descriptor.mediaType, MEDIA.ociIndex);
    assert.equal((await client(f, "x:t").resolve()).descriptor.mediaType, MEDIA.ociIndex);
  });

  it("refuses schema 1 and unknown media types by name", async () => {
    const f = await fake();
    f.putManifest("old", { schemaVersion: 1, name: "old", fsLayers: [] }, MEDIA.dockerSchema1, "v1");
    f.putManifest(
      "art",
      { schemaVersion: 2, mediaType: "application/vnd.oci.artifact.manifest.v1+json" },
      "application/vnd.oci.artifact.manifest.v1+json",
      "a",
    );
    await assert.rejects(client(f, "old:v1").resolve(), isError(FailedPreconditionError, /schema 1 manifest.*push the image again/));
    await assert.rejects(client(f, "art:a").resolve(), isError(FailedPreconditionError, /media type application\/vnd\.oci\.artifact/));
  });

  it("says which of repository, tag, manifest or blob is missing", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    await assert.rejects(client(f, "nope:t").resolve(), isError(NotFoundError, /repository nope not found on registry 127\.0\.0\.1:\d+/));
    await assert.rejects(client(f, "x:v9").resolve(), isError(NotFoundError, /tag v9 not found in 127\.0\.0\.1:\d+\/x/));
    await assert.rejects(client(f, `x@${sha256("none")}`).resolve(), isError(NotFoundError, /manifest .*@sha256:.* not found/));
    const missing = { mediaType: MEDIA.ociLayerGzip, digest: sha256("missing"), size: 7 };
    await assert.rejects(client(f, "x:t").fetchBlob(missing), isError(NotFoundError, /blob sha256:.* not found .*push it again/));
    assert.ok(img.layers.length === 1);
  });

  it("fetches configs from /blobs/ and manifests from /manifests/, whole and verified", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"], platforms: [{ os: "linux", architecture: "amd64" }] });
    const c = client(f, "x:t");
    const config = await c.fetchBlobBytes(img.configs[0]!);
    assert.equal(sha256(config), img.configs[0]!.digest);
    assert.equal(f.requests.at(-1)?.url, blobPath("x", img.configs[0]!.digest));
    const manifest = await c.fetchBlobBytes(img.manifests[0]!);
    assert.equal(sha256(manifest), img.manifests[0]!.digest);
    assert.equal(f.requests.at(-1)?.url, manifestPath("x", img.manifests[0]!.digest));
    f.on(blobPath("x", img.configs[0]!.digest), { kind: "wrong-digest" });
    await assert.rejects(c.fetchBlobBytes(img.configs[0]!), isError(DataLossError, /does not match its digest/));
    await assert.rejects(c.fetchBlobBytes({ ...img.configs[0]!, size: img.configs[0]!.size + 1 }), isError(DataLossError, /descriptor says/));
  });

  it("refuses to read more than 8 MiB whole, before asking", async () => {
    const f = await fake();
    const before = f.requests.length;
    await assert.rejects(
      client(f, "x:t").fetchBlobBytes({ mediaType: MEDIA.ociConfig, digest: sha256("big"), size: 9 << 20 }),
      isError(FailedPreconditionError, /more than the 8388608/),
    );
    assert.equal(f.requests.length, before);
  });

  it("retries a body cut short, within the same attempts", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    f.on(blobPath("x", img.configs[0]!.digest), { kind: "truncate", after: 10 }, 1);
    const s = sleeps();
    assert.equal(sha256(await client(f, "x:t", { sleep: s.sleep }).fetchBlobBytes(img.configs[0]!)), img.configs[0]!.digest);
    assert.equal(s.waits.length, 1);
    f.on(blobPath("x", img.configs[0]!.digest), { kind: "truncate", after: 10 });
    await assert.rejects(client(f, "x:t", { sleep: s.sleep, maxAttempts: 2 }).fetchBlobBytes(img.configs[0]!), isError(DataLossError, /truncated/));
  });
});

describe("RegistryClient: connections", () => {
  it("reuses kept-alive connections for many requests without piling listeners on them", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on("warning", onWarning);
    try {
      const c = client(f, "x:t");
      for (let i = 0; i < 40; i++) await c.fetchBlobBytes(img.configs[0]!);
      for (let i = 0; i < 20; i++) await readAll(await c.fetchBlob(img.layers[0]!));
    } finally {
      process.off("warning", onWarning);
    }
    assert.deepEqual(
      warnings.map((w) => w.message),
      [],
    );
    const sockets = new Set(f.requests.map((r) => r.remote));
    assert.ok(sockets.size <= 2, `${sockets.size} connections for ${f.requests.length} sequential requests`);
  });
});

describe("RegistryClient: layers", () => {
  it("streams a layer with backpressure: an unread stream stops the registry's writes", async () => {
    const f = await fake();
    const size = 48 << 20;
    const data = Buffer.alloc(size, "0123456789abcdef");
    const layer = f.putBlob("x", data);
    const stream = await client(f, "x:t").fetchBlob(layer);
    // Read one chunk, then nothing: the registry must come to a halt well before the end.
    await new Promise<void>((resolve) => stream.once("readable", () => resolve()));
    assert.ok(stream.read() !== null);
    let last = -1;
    while (f.sent.get(layer.digest) !== last) {
      last = f.sent.get(layer.digest) ?? 0;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(last < size / 2, `the registry wrote ${last} of ${size} bytes to a reader that stopped`);
    const rest = await readAll(stream);
    assert.ok(rest.length > 0 && rest.length < size);
    assert.equal(f.sent.get(layer.digest), size);
  });

  it("hands the whole layer over, and errors the stream when it is cut short", async () => {
    const f = await fake();
    const data = Buffer.alloc(300_000, 7);
    const layer = f.putBlob("x", data);
    assert.deepEqual(await readAll(await client(f, "x:t").fetchBlob(layer)), data);

    f.on(blobPath("x", layer.digest), { kind: "truncate", after: 100_000 }, 1);
    const cut = await client(f, "x:t").fetchBlob(layer);
    await assert.rejects(readAll(cut), isError(DataLossError, /truncated: the connection closed after \d+ of 300000 bytes/));

    f.on(blobPath("x", layer.digest), { kind: "truncate", after: 100_000, mode: "short" }, 1);
    await assert.rejects(client(f, "x:t").fetchBlob(layer), isError(DataLossError, /is 100000 bytes, but its descriptor says 300000/));

    const longer = { ...layer, size: layer.size - 1 };
    await assert.rejects(client(f, "x:t").fetchBlob(longer), isError(DataLossError, /descriptor says/));
  });

  it("fetches a foreign layer from its URL without credentials when allowed, else from the registry", async () => {
    const f = await fake({ kind: "basic", username: "u", password: "p" });
    const layer = f.putBlob("x", "foreign bytes");
    const foreign = { ...layer, urls: ["http://example.invalid/never", "ftp://x/y", `${f.blobStore.url}/blob/x/${layer.digest}`] };
    const log = logger();
    const c = client(f, "x:t", { credentials: { username: "u", password: "p" }, logger: log });
    assert.equal(String(await readAll(await c.fetchBlob(foreign, { foreign: true }))), "foreign bytes");
    assert.equal(f.blobStore.requests.length, 1);
    assert.equal(f.blobStore.requests[0]?.headers.authorization, undefined);
    assert.equal(
      log.lines.filter((l) => /skipping a foreign layer URL/.test(l.message)).length,
      2,
      "plain HTTP to a remote host and ftp are skipped",
    );
    assert.equal(f.requests.length, 0, "the registry was not asked");

    assert.equal(String(await readAll(await c.fetchBlob(foreign))), "foreign bytes");
    assert.equal(f.blobStore.requests.length, 1, "not allowed: the registry serves it");
  });
});

describe("RegistryClient: retries", () => {
  it("retries 503 with backoff and then succeeds", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 503 }, 2);
    const s = sleeps();
    await client(f, "x:t", { sleep: s.sleep }).resolve();
    assert.equal(s.waits.length, 2);
    assert.ok(s.waits[0]! >= 125 && s.waits[0]! <= 250 && s.waits[1]! >= 250 && s.waits[1]! <= 500, String(s.waits));
    assert.equal(f.requests.filter((r) => r.url === manifestPath("x", "t")).length, 3);
    assert.ok(img);
  });

  it("honours Retry-After on 429, and fails at once when it asks for too long", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 429, headers: { "retry-after": "2" } }, 1);
    const s = sleeps();
    await client(f, "x:t", { sleep: s.sleep }).resolve();
    assert.deepEqual(s.waits, [2000]);
    f.on(manifestPath("x", "t"), { kind: "status", status: 429, headers: { "retry-after": "3600" } }, 1);
    await assert.rejects(
      client(f, "x:t", { sleep: s.sleep }).resolve(),
      isError(UnavailableError, /is limiting requests \(429.*asking to wait 3600.*wait and retry/),
    );
    assert.deepEqual(s.waits, [2000]);
  });

  it("gives up after maxAttempts on 5xx, saying how often it tried", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 502 });
    const s = sleeps();
    await assert.rejects(client(f, "x:t", { sleep: s.sleep }).resolve(), isError(UnavailableError, /answered 502 .*after 4 attempts: retry later/));
    assert.equal(f.requests.length, 4);
    assert.equal(s.waits.length, 3);
    await assert.rejects(client(f, "x:t", { sleep: s.sleep, maxAttempts: 2 }).resolve(), isError(UnavailableError, /after 2 attempts/));
    assert.equal(f.requests.length, 6);
  });

  it("does not retry other 4xx", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 405, body: '{"errors":[{"code":"UNSUPPORTED","message":"no"}]}' });
    const s = sleeps();
    await assert.rejects(client(f, "x:t", { sleep: s.sleep }).resolve(), isError(UnknownError, /answered 405 .*UNSUPPORTED: no/));
    assert.equal(f.requests.length, 1);
  });

  it("retries a refused connection, then says the registry is unreachable", async () => {
    const port = await freePort();
    const s = sleeps();
    const c = new RegistryClient(parseReference(`127.0.0.1:${port}/x:t`), { sleep: s.sleep, maxAttempts: 3 });
    await assert.rejects(
      c.resolve(),
      isError(UnavailableError, new RegExp(`registry 127\\.0\\.0\\.1:${port} unreachable: ECONNREFUSED.*\\(3 attempts\\)`)),
    );
    assert.equal(s.waits.length, 2);
  });
});

describe("RegistryClient: idle timeout and cancel", () => {
  // The idle timeout also bounds the TLS probe and each step of setting up a connection, so a short one could
  // fail an attempt that should succeed on a loaded machine. Where an attempt must succeed the timeout is
  // generous (GENEROUS_IDLE_MS), and what is asserted does not depend on how many attempts a slow machine needs.
  const GENEROUS_IDLE_MS = 2_000;

  it("fails a registry that sends no headers within the idle timeout", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    // Every attempt stalls: whichever step a slow machine times out in, the answer is the same.
    f.on(manifestPath("x", "t"), { kind: "stall" });
    const s = sleeps();
    await assert.rejects(
      client(f, "x:t", { sleep: s.sleep, idleTimeoutMs: 300, maxAttempts: 1 }).resolve(),
      isError(UnavailableError, /sent nothing for 0\.3 s/),
    );
    assert.deepEqual(s.waits, []);
  });

  it("retries an attempt whose registry sent no headers within the idle timeout", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "stall" }, 1);
    const s = sleeps();
    const log = logger();
    const got = await client(f, "x:t", { sleep: s.sleep, logger: log, idleTimeoutMs: GENEROUS_IDLE_MS }).resolve();
    assert.equal(got.descriptor.digest, img.manifests[0]!.digest);
    const retries = log.lines.filter((l) => l.message === "registry request failed: retrying");
    assert.ok(retries.length >= 1, "the stalled attempt was retried");
    assert.equal(retries.length, s.waits.length);
    assert.match(String(retries[0]!.fields?.["error"]), /sent nothing for 2 s/);
    assert.equal(f.requests.filter((r) => r.url === manifestPath("x", "t")).length, s.waits.length + 1);
  });

  it("errors a layer stream whose registry goes silent mid-body", async () => {
    const f = await fake();
    const layer = f.putBlob("x", Buffer.alloc(200_000, 1));
    f.on(blobPath("x", layer.digest), { kind: "stall", after: 50_000 });
    const stream = await client(f, "x:t", { idleTimeoutMs: GENEROUS_IDLE_MS }).fetchBlob(layer);
    await assert.rejects(readAll(stream), isError(UnavailableError, /sent nothing for 2 s while sending blob sha256:/));
  });

  it("cancels before connecting: no request is made", async () => {
    const f = await fake();
    const c = client(f, "x:t");
    const signal = AbortSignal.abort(new Error("user gave up"));
    await assert.rejects(c.resolve(signal), isError(CanceledError, /canceled while fetching/));
    await assert.rejects(c.fetchBlob({ mediaType: MEDIA.ociLayer, digest: sha256("a"), size: 1 }, { signal }), CanceledError);
    await assert.rejects(c.fetchBlobBytes({ mediaType: MEDIA.ociConfig, digest: sha256("a"), size: 1 }, signal), CanceledError);
    assert.equal(f.requests.length, 0);
  });

  it("cancels while waiting for the headers", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "stall" });
    const ac = new AbortController();
    const pending = client(f, "x:t").resolve(ac.signal);
    await f.registry.waitFor((r) => r.url === manifestPath("x", "t"));
    ac.abort();
    await assert.rejects(pending, isError(CanceledError, /canceled while fetching 127\.0\.0\.1:\d+\/x:t/));
  });

  it("cancels mid-body: the stream errors with CanceledError", async () => {
    const f = await fake();
    const layer = f.putBlob("x", Buffer.alloc(200_000, 1));
    f.on(blobPath("x", layer.digest), { kind: "stall", after: 50_000 });
    const ac = new AbortController();
    const stream = await client(f, "x:t").fetchBlob(layer, { signal: ac.signal });
    const got: Buffer[] = [];
    const done = (async () => {
      for await (const c of stream) {
        got.push(c as Buffer);
        ac.abort();
      }
    })();
    await assert.rejects(done, isError(CanceledError, /canceled while fetching blob/));
    assert.ok(got.length >= 1);
    assert.ok(stream.destroyed);
  });

  it("cancels while waiting to retry", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 503 });
    const ac = new AbortController();
    let sleeping!: () => void;
    const asleep = new Promise<void>((r) => {
      sleeping = r;
    });
    const pending = client(f, "x:t", {
      sleep: (_ms, signal) => {
        sleeping();
        return sleepFor(600_000, signal);
      },
    }).resolve(ac.signal);
    await asleep;
    ac.abort();
    await assert.rejects(pending, isError(CanceledError, /canceled while waiting to retry/));
  });
});

describe("RegistryClient: redirects and plain HTTP", () => {
  for (const auth of [
    { kind: "basic", username: "u", password: "p" },
    { kind: "bearer", username: "u", password: "p" },
  ] as const) {
    it(`follows a ${auth.kind} registry's blob redirect to another origin without the Authorization header`, async () => {
      const f = await fake(auth);
      const layer = f.putBlob("x", "redirected bytes");
      f.on(blobPath("x", layer.digest), { kind: "redirect" });
      const c = client(f, "x:t", { credentials: { username: "u", password: "p" } });
      assert.equal(String(await readAll(await c.fetchBlob(layer))), "redirected bytes");
      const atRegistry = f.requests.filter((r) => r.url === blobPath("x", layer.digest));
      assert.ok(atRegistry.at(-1)?.headers.authorization, "the registry got credentials");
      assert.equal(f.blobStore.requests.length, 1);
      assert.equal(f.blobStore.requests[0]?.headers.authorization, undefined, "the other origin got none");
      assert.equal(String(await c.fetchBlobBytes(layer)), "redirected bytes");
      assert.equal(f.blobStore.requests[1]?.headers.authorization, undefined);
    });
  }

  for (const auth of [
    { kind: "basic", username: "u", password: "p" },
    { kind: "bearer", username: "u", password: "p" },
  ] as const) {
    it(`a ${auth.kind} registry's storage that refuses a redirected download with a challenge of its own gets no credentials`, async () => {
      const f = await fake(auth);
      const img = f.putImage("x", "t", { layers: ["stored bytes"] });
      const [layer, config] = [img.layers[0]!, img.configs[0]!];
      f.on(blobPath("x", layer.digest), { kind: "redirect" });
      f.on(blobPath("x", config.digest), { kind: "redirect" });
      // Object storage that names itself as a token service: following its challenge would send it the password.
      const challenge = { "www-authenticate": `Bearer realm="${f.blobStore.url}/token",service="storage"` };
      f.onBlobStore({ kind: "status", status: 401, headers: challenge, body: "AccessDenied: signature expired" }, 1);
      f.onBlobStore({ kind: "status", status: 403, headers: challenge, body: "AccessDenied" }, 1);
      const s = sleeps();
      const c = client(f, "x:t", { credentials: { username: "u", password: "p" }, sleep: s.sleep });
      await assert.rejects(
        c.fetchBlob(layer),
        isError(
          UnavailableError,
          new RegExp(
            `^storage ${f.blobStore.host} refused the download \\(401: AccessDenied: signature expired\\) of blob ${layer.digest} .*registry ${f.host} redirected`,
          ),
        ),
      );
      // The challenge did not become the session's: the next download is refused by the storage again, not
      // turned into a token request to it.
      await assert.rejects(
        c.fetchBlobBytes(config),
        isError(UnavailableError, new RegExp(`^storage ${f.blobStore.host} refused the download \\(403: AccessDenied\\)`)),
      );
      assert.deepEqual(
        f.blobStore.requests.map((r) => [r.url.split("?")[0], r.headers.authorization]),
        [
          [`/blob/x/${layer.digest}`, undefined],
          [`/blob/x/${config.digest}`, undefined],
        ],
        "the storage was asked for the blobs only, and never with credentials",
      );
      // The registry's own authentication is as it was: its manifest comes with the credentials it asked for.
      const tokensBefore = f.tokenServer.requests.length;
      await c.resolve();
      assert.ok(f.requests.at(-1)?.headers.authorization?.startsWith(auth.kind === "basic" ? "Basic " : "Bearer "));
      if (auth.kind === "bearer") assert.equal(f.tokenServer.requests.length, tokensBefore, "the token it had still served");
      assert.deepEqual(s.waits, []);
    });
  }

  it("keeps the Authorization header on a same-origin redirect", async () => {
    const f = await fake({ kind: "basic", username: "u", password: "p" });
    const layer = f.putBlob("x", "moved bytes");
    f.on(blobPath("x", layer.digest), { kind: "redirect-same" });
    const c = client(f, "x:t", { credentials: { username: "u", password: "p" } });
    assert.equal(String(await readAll(await c.fetchBlob(layer))), "moved bytes");
    assert.ok(f.requests.find((r) => r.url.startsWith("/_moved/"))?.headers.authorization);
  });

  it("refuses a redirect to plain HTTP on a remote host before connecting, and a redirect loop", async () => {
    const f = await fake();
    const layer = f.putBlob("x", "bytes");
    f.on(blobPath("x", layer.digest), { kind: "redirect-to", location: "http://storage.example.invalid/blob" }, 1);
    await assert.rejects(
      client(f, "x:t").fetchBlob(layer),
      isError(
        FailedPreconditionError,
        /redirected blob .* to plain-HTTP http:\/\/storage\.example\.invalid, .*--insecure-registry storage\.example\.invalid/,
      ),
    );
    f.on(blobPath("x", layer.digest), { kind: "redirect-to", location: blobPath("x", layer.digest) });
    await assert.rejects(client(f, "x:t").fetchBlob(layer), isError(UnavailableError, /more than 5 times/));
  });

  it("allows a listed remote host over plain HTTP without connecting anywhere else first", async () => {
    const f = await fake();
    const layer = f.putBlob("x", "bytes");
    // Listed: the rule lets it through, so the failure is the connection (an .invalid name never resolves).
    f.on(blobPath("x", layer.digest), { kind: "redirect-to", location: "http://storage.example.invalid:1/blob" });
    const s = sleeps();
    await assert.rejects(
      client(f, "x:t", { insecureRegistries: ["storage.example.invalid"], sleep: s.sleep, maxAttempts: 1 }).fetchBlob(layer),
      isError(UnavailableError, /storage\.example\.invalid:1 unreachable/),
    );
  });
});

describe("RegistryClient: text from registries in messages", () => {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it matches
  const CONTROL = /[\x00-\x1f\x7f-\x9f]/;
  const noControl = (cls: abstract new (...args: never[]) => Error, message: RegExp) => (e: unknown) => {
    isError(cls, message)(e);
    assert.doesNotMatch((e as Error).message, CONTROL, JSON.stringify((e as Error).message));
    return true;
  };

  it("strips control characters from a registry's errors, a token service's and a storage host's", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["a"] });
    // A registry's errors document, a proxy's page, and what a storage host says: none may reach a terminal raw.
    const doc = JSON.stringify({ errors: [{ code: "DENIED\u001b[2J", message: "go\u001b]0;owned\u0007 away\r\nnow\u009b31m" }] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 405, body: doc }, 1);
    await assert.rejects(client(f, "x:t").resolve(), noControl(UnknownError, /answered 405 .*\(DENIED\[2J: go\]0;owned away now31m\)$/));
    f.on(manifestPath("x", "t"), { kind: "status", status: 418, body: "<html>\u001b[1A\u001b[2K\tteapot\u0000</html>" }, 1);
    await assert.rejects(client(f, "x:t").resolve(), noControl(UnknownError, /answered 418 .*\(<html>\[1A\[2K teapot<\/html>\)$/));
    f.on(blobPath("x", img.configs[0]!.digest), { kind: "redirect" });
    f.onBlobStore({ kind: "status", status: 403, body: "\u001b[31mAccessDenied\u001b[0m" }, 1);
    await assert.rejects(client(f, "x:t").fetchBlobBytes(img.configs[0]!), noControl(UnavailableError, /\(403: \[31mAccessDenied\[0m\)/));

    const g = await fake({ kind: "bearer", username: "u", password: "p" });
    g.putImage("x", "t", { layers: ["a"] });
    g.onToken({ kind: "status", status: 401, body: '{"details":"bad\\u001b[2J password"}' }, 1);
    await assert.rejects(
      client(g, "x:t", { credentials: { username: "u", password: "p" } }).resolve(),
      noControl(UnauthenticatedError, /token service .*bad\[2J password/),
    );
    g.onToken({ kind: "status", status: 400, body: "\u009b2Jbroken" }, 1);
    await assert.rejects(client(g, "x:t", { maxAttempts: 1 }).resolve(), noControl(UnavailableError, /answered 400 \(2Jbroken\)/));
  });
});

describe("RegistryClient: authentication", () => {
  it("Basic: asks for a login without credentials, uses given or config.json ones, says when they are refused", async () => {
    const f = await fake({ kind: "basic", username: "alice", password: "pw" });
    f.putImage("x", "t", { layers: ["a"] });
    await assert.rejects(
      client(f, "x:t").resolve(),
      isError(UnauthenticatedError, new RegExp(`refused anonymous access .*run \`ctrexec login ${f.host}\``)),
    );
    await client(f, "x:t", { credentials: { username: "alice", password: "pw" } }).resolve();

    const dir = join(configRoot, "basic");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { [f.host]: { auth: Buffer.from("alice:pw").toString("base64") } } }));
    await client(f, "x:t", { dockerConfigDir: dir }).resolve();

    await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { [f.host]: { auth: Buffer.from("alice:wrong").toString("base64") } } }));
    await assert.rejects(
      client(f, "x:t", { dockerConfigDir: dir }).resolve(),
      isError(UnauthenticatedError, new RegExp(`refused the credentials of user alice from ${dir}/config.json.*ctrexec login ${f.host}\` again`)),
    );
    await assert.rejects(
      client(f, "x:t", { credentials: { username: "alice", password: "nope" } }).resolve(),
      isError(UnauthenticatedError, /refused the credentials of user alice/),
    );
  });

  it("names a credential helper it does not run", async () => {
    const f = await fake({ kind: "basic", username: "alice", password: "pw" });
    f.putImage("x", "t", { layers: ["a"] });
    const dir = join(configRoot, "helper");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "config.json"), JSON.stringify({ credsStore: "pass" }));
    await assert.rejects(
      client(f, "x:t", { dockerConfigDir: dir }).resolve(),
      isError(UnauthenticatedError, /docker-credential-pass.*ctrexec login/),
    );
  });

  it("Bearer: one anonymous token for all requests of a repository, with the challenge's service and scope", async () => {
    const f = await fake({ kind: "bearer", anonymousPull: true, expiresIn: 300 });
    const img = f.putImage("team/app", "t", { layers: ["a", "b"] });
    const c = client(f, "team/app:t");
    await c.resolve();
    await c.fetchBlobBytes(img.configs[0]!);
    await Promise.all(img.layers.map(async (l) => readAll(await c.fetchBlob(l))));
    await client(f, "team/app:t").resolve();
    assert.equal(f.tokenServer.requests.length, 1, "one token, shared by the clients of the process");
    const url = new URL(f.tokenServer.requests[0]!.url, "http://x");
    assert.equal(url.searchParams.get("service"), "fake-registry");
    assert.deepEqual(url.searchParams.getAll("scope"), ["repository:team/app:pull"]);
    assert.equal(f.tokenServer.requests[0]!.headers.authorization, undefined, "anonymous");
    assert.equal(f.requests.filter((r) => r.headers.authorization === undefined).length, 2, "only each client's first request goes unauthenticated");
  });

  it("Bearer: sends credentials to the token service only, and says when they are refused", async () => {
    const f = await fake({ kind: "bearer", username: "bob", password: "pw", accessTokenField: true });
    f.putImage("x", "t", { layers: ["a"] });
    await client(f, "x:t", { credentials: { username: "bob", password: "pw" } }).resolve();
    assert.equal(f.tokenServer.requests[0]?.headers.authorization, `Basic ${Buffer.from("bob:pw").toString("base64")}`);
    assert.ok(
      f.requests.every((r) => !r.headers.authorization?.startsWith("Basic")),
      "no password to the registry",
    );
    await assert.rejects(
      client(f, "x:t", { credentials: { username: "bob", password: "bad" } }).resolve(),
      isError(UnauthenticatedError, /refused the credentials of user bob .*token service.*incorrect username or password/),
    );
    await assert.rejects(client(f, "x:t").resolve(), isError(UnauthenticatedError, /refused anonymous access .*ctrexec login/));
  });

  it("Bearer: replaces a token the registry no longer accepts, once", async () => {
    const f = await fake({ kind: "bearer", anonymousPull: true, expiresIn: 3600 });
    const img = f.putImage("x", "t", { layers: ["a"] });
    const c = client(f, "x:t");
    await c.resolve();
    f.revokeTokens();
    assert.equal(sha256(await c.fetchBlobBytes(img.configs[0]!)), img.configs[0]!.digest);
    assert.equal(f.tokenServer.requests.length, 2);
  });

  it("Bearer: retries a failing token service, and cancels while waiting for it", async () => {
    const f = await fake({ kind: "bearer", anonymousPull: true });
    f.putImage("x", "t", { layers: ["a"] });
    f.onToken({ kind: "status", status: 503 }, 1);
    const s = sleeps();
    await client(f, "x:t", { sleep: s.sleep }).resolve();
    assert.equal(s.waits.length, 1);
    assert.equal(f.tokenServer.requests.length, 2);

    const g = await fake({ kind: "bearer", anonymousPull: true });
    g.putImage("x", "t", { layers: ["a"] });
    g.onToken({ kind: "stall" });
    const ac = new AbortController();
    const pending = client(g, "x:t").resolve(ac.signal);
    await g.tokenServer.waitFor((r) => r.url.startsWith("/token"));
    ac.abort();
    await assert.rejects(pending, isError(CanceledError, /canceled while fetching a token for 127\.0\.0\.1:\d+\/x:t/));
  });

  it("checkLogin: succeeds with good credentials, refuses bad ones, for Basic and Bearer", async () => {
    const basic = await fake({ kind: "basic", username: "u", password: "p" });
    await checkLogin(basic.host, { username: "u", password: "p" });
    await assert.rejects(
      checkLogin(basic.host, { username: "u", password: "x" }),
      isError(UnauthenticatedError, /refused the credentials of user u/),
    );
    const bearer = await fake({ kind: "bearer", username: "u", password: "p" });
    await checkLogin(`http://${bearer.host}/`, { username: "u", password: "p" });
    const token = new URL(bearer.tokenServer.requests[0]!.url, "http://x");
    assert.equal(token.searchParams.get("account"), "u");
    assert.deepEqual(token.searchParams.getAll("scope"), []);
    await assert.rejects(checkLogin(bearer.host, { username: "u", password: "x" }), UnauthenticatedError);
    const open = await fake();
    await checkLogin(open.host, { username: "u", password: "p" });
  });
});
