import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { promisify } from "node:util";
import { CanceledError, CtrexecError, DataLossError, NotFoundError, UnauthenticatedError, UnavailableError } from "../../src/errors.js";
import { imageMountable, type PullOptions, type PullProgress, pullImage, type ResolvedImage, resolveImage } from "../../src/index.js";
import { createExecutorEnv, type ExecutorEnv } from "../helpers/executor-env.js";
import { blobPath, type FakeAuth, FakeRegistry, manifestPath } from "../helpers/fake-registry.js";
import { type LayerCompression, writeMultiPlatformLayout, writeRandomLayout, writeRunnableLayout } from "../helpers/oci-image.js";
import { startRegistry, type TestRegistry } from "../helpers/registry.js";
import { Collect } from "../helpers/streams.js";

const run = promisify(execFile);

/**
 * Issue 19: pulls from a real registry (Debian's docker-registry on a loopback port, images pushed with skopeo):
 * layer compressions, by digest, platforms of an index, Basic auth, TLS with a private CA, a second pull that finds
 * everything present, an image ctr pulled; after every failure nothing is left that containerd's GC would keep.
 */

const USER = { username: "t19c-user", password: `pw-${randomBytes(6).toString("hex")}` };

describe("pull from a real registry", () => {
  let env: ExecutorEnv;
  let plain: TestRegistry;
  let work: string;
  let n = 0;

  const ctr = async (...args: string[]) => (await run("ctr", ["-n", env.namespace, ...args], { maxBuffer: 16 << 20 })).stdout;
  const lines = (s: string) => s.split("\n").filter((l) => l.trim() !== "");

  /** A new layout dir under the test's state dir. */
  const layoutDir = () => join(work, `layout-${++n}`);

  /** Pushes a runnable image (busybox + /layer.txt = marker) and returns its reference and manifest digest. */
  async function pushRunnable(reg: TestRegistry, repo: string, options: { compression?: LayerCompression; docker?: boolean } = {}) {
    const dir = layoutDir();
    const marker = `${options.compression ?? "gzip"}-${randomBytes(4).toString("hex")}`;
    const image = await writeRunnableLayout(dir, { ...options, marker, tag: "v1" });
    const digest = await reg.push(`${dir}:v1`, `${repo}:v1`);
    assert.equal(digest, image.manifest.digest, "skopeo changed the manifest");
    return { ref: `${reg.host}/${repo}:v1`, digest, marker, image, dir };
  }

  /** `ctr run --rm` of the image: proves the unpacked snapshots and labels are what containerd's own client expects. */
  async function ctrRun(ref: string, ...cmd: string[]): Promise<string> {
    return ctr("run", "--rm", ref, `t19c-${randomBytes(4).toString("hex")}`, ...cmd);
  }

  /** The same through ctrexec's executor. */
  async function execRun(image: string | ResolvedImage, ...args: string[]): Promise<string> {
    const stdout = new Collect();
    await env.executor.run({ root: { source: imageMountable(env.client, image) }, process: { meta: { args }, stdout } });
    return stdout.text;
  }

  /**
   * Runs `body` and fails if anything of it throws outside its promises meanwhile (a stream destroyed after the
   * pull gave up on it, with nobody listening: in an application, an uncaught exception).
   */
  async function noStrayErrors(body: () => Promise<void>): Promise<void> {
    const stray: unknown[] = [];
    const onStray = (e: unknown) => stray.push(e);
    process.on("uncaughtException", onStray);
    try {
      await body();
      // Errors emitted on the way out surface within a few ticks.
      await new Promise((r) => setTimeout(r, 100));
      const stacks = stray.map((e) => (e instanceof Error ? e.stack : String(e))).join("\n");
      assert.deepEqual(stray.map(String), [], `errors thrown outside the pull's promise:\n${stacks}`);
    } finally {
      process.off("uncaughtException", onStray);
    }
  }

  /** containerd's GC, now: it runs synchronously when a lease is deleted with sync. */
  async function gc(): Promise<void> {
    const id = `t19c-gc-${randomBytes(4).toString("hex")}`;
    await env.client.leases.create(id);
    await env.client.leases.delete(id, { sync: true });
  }

  /** What a failed pull may not leave: an image record, a lease, an ingest; and after a GC no content or snapshot. */
  async function assertNothingLeft(ref?: string): Promise<void> {
    if (ref) await assert.rejects(env.client.images.get(ref), NotFoundError, `an image record for ${ref} was left`);
    assert.deepEqual(
      (await env.client.leases.list()).map((l) => l.id),
      [],
      "leases left",
    );
    assert.deepEqual(lines(await ctr("content", "active")).slice(1), [], "ingests left");
    await gc();
    const images = (await env.client.images.list()).map((i) => i.name);
    if (images.length === 0) {
      assert.deepEqual(lines(await ctr("content", "ls", "-q")), [], "content left that GC does not take");
      assert.deepEqual(
        (await env.client.snapshots.list("overlayfs")).map((s) => s.name),
        [],
        "snapshots left that GC does not take",
      );
    }
  }

  async function removeImages(): Promise<void> {
    for (const i of await env.client.images.list()) await ctr("images", "rm", "--sync", i.name);
  }

  before(async () => {
    env = await createExecutorEnv("t19c-pull");
    work = await mkdtemp(join(env.stateDir, "work-"));
    plain = await startRegistry({ dir: work });
  });

  afterEach(async () => {
    await env.executor.settled();
    await removeImages();
    await assertNothingLeft();
    await env.assertClean();
  });

  after(async () => {
    await plain?.stop();
    await removeImages().catch(() => {});
    await env?.dispose();
  });

  for (const compression of ["gzip", "zstd", "none"] as const) {
    it(`pulls an image of ${compression} layers over plain HTTP; ctr and ctrexec run it, also after a GC; rm takes it all`, async () => {
      const { ref, digest, marker } = await pushRunnable(plain, `t19c/${compression}`, { compression });
      const resolved = await pullImage(env.client, ref);
      assert.equal(resolved.name, ref);
      assert.equal(resolved.manifest.digest, digest);
      assert.equal(resolved.layers.length, 2);
      const mediaType = {
        gzip: "application/vnd.oci.image.layer.v1.tar+gzip",
        zstd: "application/vnd.oci.image.layer.v1.tar+zstd",
        none: "application/vnd.oci.image.layer.v1.tar",
      }[compression];
      assert.deepEqual(
        resolved.layers.map((l) => l.mediaType),
        [mediaType, mediaType],
      );
      assert.equal((await env.client.images.get(ref)).target?.digest, digest);
      // The labels containerd's client writes keep content and snapshots through a GC.
      await gc();
      const snapshots = new Set((await env.client.snapshots.list("overlayfs")).map((s) => s.name));
      for (const id of resolved.chainIds) assert.ok(snapshots.has(id), `snapshot ${id} was collected`);
      const content = new Set(lines(await ctr("content", "ls", "-q")));
      for (const d of [resolved.manifest, resolved.config, ...resolved.layers]) assert.ok(content.has(d.digest), `${d.digest} was collected`);
      assert.equal(await ctrRun(ref, "cat", "/layer.txt"), `${marker}\n`);
      assert.equal(await execRun(resolved, "cat", "/layer.txt"), `${marker}\n`);
      assert.equal(await execRun(ref, "id", "-u"), "0\n");
      await ctr("images", "rm", "--sync", ref);
      assert.deepEqual(lines(await ctr("content", "ls", "-q")), [], "ctr images rm left content");
      assert.deepEqual(
        (await env.client.snapshots.list("overlayfs")).map((s) => s.name),
        [],
        "ctr images rm left snapshots",
      );
    });
  }

  it("pulls by digest (the record named by it) and the default tag latest; an unknown digest or tag is NotFound", async () => {
    const { digest, marker, dir } = await pushRunnable(plain, "t19c/bydigest");
    assert.equal(await plain.push(`${dir}:v1`, "t19c/bydigest:latest"), digest);
    const byDigest = `${plain.host}/t19c/bydigest@${digest}`;
    const resolved = await pullImage(env.client, byDigest);
    assert.equal(resolved.name, byDigest);
    assert.equal(resolved.manifest.digest, digest);
    assert.equal((await env.client.images.get(byDigest)).target?.digest, digest);
    assert.equal(await ctrRun(byDigest, "cat", "/layer.txt"), `${marker}\n`);
    const latest = await pullImage(env.client, `${plain.host}/t19c/bydigest`);
    assert.equal(latest.name, `${plain.host}/t19c/bydigest:latest`);
    assert.equal(latest.manifest.digest, digest);
    await removeImages();
    await assertNothingLeft();

    const unknownDigest = `${plain.host}/t19c/bydigest@sha256:${"0".repeat(64)}`;
    await assert.rejects(pullImage(env.client, unknownDigest), NotFoundError);
    await assertNothingLeft(unknownDigest);
    const unknownTag = `${plain.host}/t19c/bydigest:nope`;
    await assert.rejects(pullImage(env.client, unknownTag), (e: unknown) => e instanceof NotFoundError && /nope|manifest/.test(e.message));
    await assertNothingLeft(unknownTag);
    const unknownRepo = `${plain.host}/t19c/no-such-repo:v1`;
    await assert.rejects(pullImage(env.client, unknownRepo), NotFoundError);
    await assertNothingLeft(unknownRepo);
  });

  for (const docker of [false, true]) {
    const kind = docker ? "a Docker manifest list of schema 2 manifests" : "an OCI index (with an attestation manifest)";
    it(`picks this host's manifest from ${kind}; platform picks another; a platform it lacks is NotFound`, async () => {
      const dir = layoutDir();
      const mp = await writeMultiPlatformLayout(dir, { tag: "m", docker });
      const repo = `t19c/multi-${docker ? "docker" : "oci"}`;
      assert.equal(await plain.push(`${dir}:m`, `${repo}:m`), mp.index.digest);
      const ref = `${plain.host}/${repo}:m`;
      const events: PullProgress[] = [];
      const resolved = await pullImage(env.client, ref, { onProgress: (e) => events.push(e) });
      assert.equal(resolved.manifest.digest, mp.amd64.manifest.digest);
      assert.equal((await env.client.images.get(ref)).target?.digest, mp.index.digest, "the record names the index");
      const fetched = new Set(events.filter((e) => e.state === "done").map((e) => e.digest));
      for (const other of [mp.arm64, mp.armv7]) assert.ok(!fetched.has(other.manifest.digest), "another platform's manifest was fetched");
      assert.equal(await ctrRun(ref, "cat", "/platform.txt"), "linux/amd64\n");
      assert.equal(await execRun(ref, "cat", "/platform.txt"), "linux/amd64\n");

      const armRef = `${plain.host}/${repo}:m`;
      const arm = await pullImage(env.client, armRef, { platform: "linux/arm64/v8", unpack: false });
      assert.equal(arm.manifest.digest, mp.arm64.manifest.digest);
      assert.equal(arm.config.digest, mp.arm64.config.digest);
      const arm7 = await pullImage(env.client, armRef, { platform: "linux/arm/v7", unpack: false });
      assert.equal(arm7.manifest.digest, mp.armv7.manifest.digest);
      await removeImages();
      await assertNothingLeft();

      await assert.rejects(
        pullImage(env.client, ref, { platform: "linux/s390x" }),
        (e: unknown) => e instanceof NotFoundError && /s390x/.test(e.message),
      );
      await assertNothingLeft(ref);
    });
  }

  it("second pull finds every blob present: no download, an `exists` event for the config and each layer", async () => {
    const { ref } = await pushRunnable(plain, "t19c/twice");
    const first: PullProgress[] = [];
    const resolved = await pullImage(env.client, ref, { onProgress: (e) => first.push(e) });
    for (const l of resolved.layers) assert.ok(first.some((e) => e.digest === l.digest && e.state === "downloading"));
    const second: PullProgress[] = [];
    const again = await pullImage(env.client, ref, { onProgress: (e) => second.push(e) });
    assert.deepEqual(again, resolved);
    assert.deepEqual(
      second.filter((e) => e.state === "downloading"),
      [],
      "the second pull downloaded",
    );
    for (const d of [resolved.config, ...resolved.layers]) {
      assert.ok(
        second.some((e) => e.digest === d.digest && e.state === "exists"),
        `no exists event for ${d.digest}`,
      );
    }
  });

  it("resolveImage's pull policies: never (NotFound), missing (pulls once), always (sees a new push)", async () => {
    const first = await pushRunnable(plain, "t19c/policy");
    await assert.rejects(resolveImage(env.client, first.ref, { pull: "never" }), NotFoundError);
    await assertNothingLeft(first.ref);
    assert.equal((await resolveImage(env.client, first.ref, { pull: "missing" })).manifest.digest, first.digest);
    const second = await pushRunnable(plain, "t19c/policy");
    assert.notEqual(second.digest, first.digest);
    const events: PullProgress[] = [];
    assert.equal((await resolveImage(env.client, first.ref, { pull: "missing", onProgress: (e) => events.push(e) })).manifest.digest, first.digest);
    assert.deepEqual(events, [], "pull missing went to the registry for an image it has");
    assert.equal((await resolveImage(env.client, first.ref, { pull: "always" })).manifest.digest, second.digest);
    assert.equal(await execRun(first.ref, "cat", "/layer.txt"), `${second.marker}\n`);
  });

  it("a shared layer whose distribution.source label is full: the pull from another repository keeps it and succeeds", async () => {
    const first = await pushRunnable(plain, "t19c/src-a");
    await plain.push(`${first.dir}:v1`, "t19c/src-b:v1");
    await pullImage(env.client, first.ref);
    const layer = first.image.layers[0]!.descriptor.digest;
    const key = "containerd.io/distribution.source.127.0.0.1";
    // About 170 repositories of one registry host: the next one would pass containerd's 4096-byte limit.
    const full = Array.from({ length: 400 }, (_, i) => `r/${i}`)
      .join(",")
      .slice(0, 4096 - key.length - 2);
    await env.client.content.setLabels(layer, { [key]: full });
    await pullImage(env.client, `${plain.host}/t19c/src-b:v1`);
    assert.equal((await env.client.content.info(layer)).labels[key], full);
  });

  it("a config descriptor larger than a config may be is refused before anything is read", async () => {
    const fake = await FakeRegistry.start();
    try {
      const cfg = fake.putBlob("t19c/bigcfg", "{}", "application/vnd.oci.image.config.v1+json");
      const manifest = { schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json", config: { ...cfg, size: 9 << 20 }, layers: [] };
      fake.putManifest("t19c/bigcfg", manifest, manifest.mediaType, "v1");
      const ref = `${fake.host}/t19c/bigcfg:v1`;
      await assert.rejects(
        pullImage(env.client, ref),
        (e: unknown) => e instanceof CtrexecError && /more than the \d+ a manifest or config may be/.test(e.message),
      );
      assert.equal(fake.requests.filter((r) => r.url.includes(cfg.digest)).length, 0, "the config was fetched");
      await assertNothingLeft(ref);
    } finally {
      await fake.close();
    }
  });

  it("a stored image whose manifest names a large blob as a small config: DataLossError, the blob is not read", async () => {
    const lease = `ctrexec-test-bigcfg-${randomBytes(4).toString("hex")}`;
    await env.client.leases.create(lease);
    const leased = env.client.withLease(lease);
    const name = `${plain.host}/t19c/local-bigcfg:v1`;
    try {
      const big = randomBytes(4 << 20);
      const bigDigest = `sha256:${createHash("sha256").update(big).digest("hex")}`;
      await leased.content.write(`t19c-big-${randomBytes(4).toString("hex")}`, [big], { digest: bigDigest, size: big.length });
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: bigDigest, size: 100 },
          layers: [],
        }),
      );
      const manifestDigest = `sha256:${createHash("sha256").update(manifest).digest("hex")}`;
      await leased.content.write(`t19c-m-${randomBytes(4).toString("hex")}`, [manifest], { digest: manifestDigest, size: manifest.length });
      await leased.images.create({
        name,
        target: { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: manifestDigest, size: manifest.length },
      });
      await assert.rejects(resolveImage(env.client, name), (e: unknown) => {
        assert.ok(e instanceof DataLossError, String(e));
        assert.match(e.message, /is 4194304 bytes in the store, but the image's descriptor says 100/);
        return true;
      });
    } finally {
      await ctr("images", "rm", "--sync", name).catch(() => {});
      await env.client.leases.delete(lease, { sync: true });
    }
  });

  it("runs an image `ctr images pull` fetched, without downloading it again", async () => {
    const { ref, marker, digest } = await pushRunnable(plain, "t19c/ctr-pulled");
    await ctr("images", "pull", "--plain-http", ref);
    const before = lines(await ctr("content", "ls", "-q")).sort();
    const events: PullProgress[] = [];
    const resolved = await resolveImage(env.client, ref, { pull: "missing", onProgress: (e) => events.push(e) });
    assert.equal(resolved.manifest.digest, digest);
    assert.deepEqual(
      events.filter((e) => e.state === "downloading"),
      [],
    );
    assert.equal(await execRun(ref, "cat", "/layer.txt"), `${marker}\n`);
    // And a pull of it finds it all there.
    const pulled: PullProgress[] = [];
    await pullImage(env.client, ref, { onProgress: (e) => pulled.push(e) });
    assert.deepEqual(
      pulled.filter((e) => e.state === "downloading"),
      [],
    );
    assert.deepEqual(lines(await ctr("content", "ls", "-q")).sort(), before);
  });

  it("two pulls of one image at once both succeed, with one image record and nothing else left", async () => {
    const dir = layoutDir();
    const image = await writeRandomLayout(dir, { tag: "twin", layerSize: 4 << 20, seed: `twin-${randomBytes(4).toString("hex")}` });
    await plain.push(`${dir}:twin`, "t19c/twin:twin");
    const ref = `${plain.host}/t19c/twin:twin`;
    let a: ResolvedImage | undefined;
    let b: ResolvedImage | undefined;
    await noStrayErrors(async () => {
      [a, b] = await Promise.all([pullImage(env.client, ref), pullImage(env.client, ref)]);
    });
    assert.ok(a && b);
    assert.equal(a.manifest.digest, image.manifest.digest);
    assert.deepEqual(b, a);
    assert.deepEqual(
      (await env.client.images.list()).map((i) => i.name),
      [ref],
    );
    assert.deepEqual(
      (await env.client.leases.list()).map((l) => l.id),
      [],
      "leases left",
    );
    assert.deepEqual(lines(await ctr("content", "active")).slice(1), [], "ingests left");
  });

  it("a registry that is gone: UnavailableError naming it; nothing left", async () => {
    const reg = await startRegistry({ dir: work });
    const ref = `${reg.host}/t19c/gone:v1`;
    await reg.stop();
    await assert.rejects(pullImage(env.client, ref), (e: unknown) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.ok(e.message.includes(reg.host), e.message);
      return true;
    });
    await assertNothingLeft(ref);
  });

  it("cancel mid-download: CanceledError, and nothing left", async () => {
    const dir = layoutDir();
    await writeRandomLayout(dir, { tag: "big", layerSize: 16 << 20, seed: `cancel-${randomBytes(4).toString("hex")}` });
    await plain.push(`${dir}:big`, "t19c/cancel:big");
    const ref = `${plain.host}/t19c/cancel:big`;
    const ac = new AbortController();
    const options: PullOptions = {
      signal: ac.signal,
      onProgress: (e) => {
        if (e.state === "downloading" && (e.current ?? 0) > 0) ac.abort();
      },
    };
    await noStrayErrors(() => assert.rejects(pullImage(env.client, ref, options), CanceledError));
    await assertNothingLeft(ref);
  });

  describe("with htpasswd (Basic) auth", () => {
    let reg: TestRegistry;
    let ref: string;
    let marker: string;
    let noConfig: string;

    before(async () => {
      reg = await startRegistry({ auth: USER, dir: work });
      ({ ref, marker } = await pushRunnable(reg, "t19c/private"));
      // An empty docker config dir, so that no config.json of this host's user takes part.
      noConfig = join(work, "no-docker-config");
      await mkdir(noConfig, { recursive: true });
    });
    after(() => reg?.stop());

    it("without credentials: UnauthenticatedError telling to run `ctrexec login HOST`; nothing left", async () => {
      await assert.rejects(pullImage(env.client, ref, { dockerConfigDir: noConfig }), (e: unknown) => {
        assert.ok(e instanceof UnauthenticatedError, String(e));
        assert.equal(e.code, "UNAUTHENTICATED");
        assert.match(e.message, new RegExp(`ctrexec login ${reg.host.replace(/\./g, "\\.")}`));
        return true;
      });
      await assertNothingLeft(ref);
    });

    it("wrong credentials: UnauthenticatedError saying they were refused; nothing left", async () => {
      await assert.rejects(
        pullImage(env.client, ref, { dockerConfigDir: noConfig, credentials: { username: USER.username, password: "wrong" } }),
        (e: unknown) => e instanceof UnauthenticatedError && /refused/.test(e.message) && !e.message.includes("wrong"),
      );
      await assertNothingLeft(ref);
    });

    it("credentials from the option", async () => {
      const resolved = await pullImage(env.client, ref, { dockerConfigDir: noConfig, credentials: USER });
      assert.equal(await execRun(resolved, "cat", "/layer.txt"), `${marker}\n`);
    });

    it("credentials from config.json: dockerConfigDir, $DOCKER_CONFIG; the option wins over the file", async () => {
      const dir = join(work, "docker-config");
      await mkdir(dir, { recursive: true });
      const auth = Buffer.from(`${USER.username}:${USER.password}`).toString("base64");
      await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { [reg.host]: { auth } } }), { mode: 0o600 });
      assert.equal((await pullImage(env.client, ref, { dockerConfigDir: dir })).name, ref);
      await removeImages();

      const saved = process.env.DOCKER_CONFIG;
      process.env.DOCKER_CONFIG = dir;
      try {
        assert.equal((await pullImage(env.client, ref)).name, ref);
        await removeImages();
        // username/password instead of auth, under an https:// key.
        await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { [`https://${reg.host}`]: USER } }), { mode: 0o600 });
        assert.equal((await pullImage(env.client, ref)).name, ref);
        await removeImages();
        await writeFile(join(dir, "config.json"), JSON.stringify({ auths: { [reg.host]: { username: USER.username, password: "stale" } } }), {
          mode: 0o600,
        });
        await assert.rejects(pullImage(env.client, ref), UnauthenticatedError);
        await assertNothingLeft(ref);
        assert.equal((await pullImage(env.client, ref, { credentials: USER })).name, ref);
      } finally {
        if (saved === undefined) delete process.env.DOCKER_CONFIG;
        else process.env.DOCKER_CONFIG = saved;
      }
    });
  });

  describe("over TLS with a private CA", () => {
    let reg: TestRegistry;
    let ref: string;
    let marker: string;

    before(async () => {
      reg = await startRegistry({ tls: true, dir: work });
      ({ ref, marker } = await pushRunnable(reg, "t19c/tls"));
    });
    after(() => reg?.stop());

    it("pulls with the CA in caCerts", async () => {
      assert.ok(reg.caPem);
      const resolved = await pullImage(env.client, ref, { caCerts: [reg.caPem] });
      assert.equal(await ctrRun(ref, "cat", "/layer.txt"), `${marker}\n`);
      assert.equal(await execRun(resolved, "cat", "/layer.txt"), `${marker}\n`);
    });

    it("without the CA: a certificate error naming the registry, nothing left", async () => {
      await assert.rejects(pullImage(env.client, ref), (e: unknown) => {
        assert.ok(e instanceof CtrexecError, String(e));
        assert.match(e.message, /certificate|self[- ]signed|issuer/i);
        assert.ok(e.message.includes(reg.host), e.message);
        return true;
      });
      await assertNothingLeft(ref);
    });
  });

  describe("with a scripted registry: what a real one will not do on demand", () => {
    const fakes: FakeRegistry[] = [];
    after(async () => {
      for (const f of fakes) await f.close();
    });

    /** A fake registry (`auth` as FakeRegistry takes it) serving a runnable image of ours as `repo:v1`. */
    async function fakeWith(repo: string, auth?: FakeAuth) {
      const fake = await FakeRegistry.start(auth ? { auth } : {});
      fakes.push(fake);
      const dir = layoutDir();
      const marker = `fake-${randomBytes(4).toString("hex")}`;
      const image = await writeRunnableLayout(dir, { marker, tag: "v1" });
      const blob = (d: string) => readFile(join(dir, "blobs", "sha256", d.slice(7)));
      fake.putBlob(repo, await blob(image.config.digest), image.config.mediaType);
      for (const l of image.layers) fake.putBlob(repo, await blob(l.descriptor.digest), l.descriptor.mediaType);
      fake.putManifest(repo, await blob(image.manifest.digest), image.manifest.mediaType, "v1");
      // The busybox layer: large enough to be cut off, stalled or redirected mid-body.
      const layer = image.layers[0]!.descriptor.digest;
      return { fake, ref: `${fake.host}/${repo}:v1`, marker, image, layer };
    }

    it("a config whose diff ID does not match what the layer unpacks to: DataLossError; nothing left", async () => {
      const fake = await FakeRegistry.start();
      fakes.push(fake);
      const dir = layoutDir();
      const image = await writeRunnableLayout(dir, { marker: "diffid", tag: "v1" });
      const blob = (d: string) => readFile(join(dir, "blobs", "sha256", d.slice(7)));
      const config = JSON.parse((await blob(image.config.digest)).toString()) as { rootfs: { diff_ids: string[] } };
      config.rootfs.diff_ids = config.rootfs.diff_ids.map(() => `sha256:${"0".repeat(64)}`);
      const cfg = fake.putBlob("t19c/diffid", JSON.stringify(config), image.config.mediaType);
      const layers = [];
      for (const l of image.layers) layers.push(fake.putBlob("t19c/diffid", await blob(l.descriptor.digest), l.descriptor.mediaType));
      fake.putManifest("t19c/diffid", { schemaVersion: 2, mediaType: image.manifest.mediaType, config: cfg, layers }, image.manifest.mediaType, "v1");
      const ref = `${fake.host}/t19c/diffid:v1`;
      await noStrayErrors(() =>
        assert.rejects(pullImage(env.client, ref), (e: unknown) => {
          assert.ok(e instanceof DataLossError, String(e));
          assert.match(e.message, /unpacks to sha256:[0-9a-f]{64}, but the image config says sha256:0{64}/);
          return true;
        }),
      );
      await assertNothingLeft(ref);
    });

    it("a non-distributable layer comes from its URLs only with allowForeignLayers; without, from the registry", async () => {
      const fake = await FakeRegistry.start();
      fakes.push(fake);
      const dir = layoutDir();
      const marker = `foreign-${randomBytes(4).toString("hex")}`;
      const image = await writeRunnableLayout(dir, { marker, tag: "v1" });
      const blob = (d: string) => readFile(join(dir, "blobs", "sha256", d.slice(7)));
      const repo = "t19c/foreign";
      const cfg = fake.putBlob(repo, await blob(image.config.digest), image.config.mediaType);
      const layers = [];
      for (const l of image.layers) {
        const stored = fake.putBlob(repo, await blob(l.descriptor.digest), "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip");
        layers.push({ ...stored, urls: [`${fake.blobStore.url}/blob/${repo}/${stored.digest}`] });
        // The registry will not serve it: only its URL does.
        fake.on(blobPath(repo, stored.digest), { kind: "status", status: 404, body: '{"errors":[{"code":"BLOB_UNKNOWN"}]}' });
      }
      fake.putManifest(repo, { schemaVersion: 2, mediaType: image.manifest.mediaType, config: cfg, layers }, image.manifest.mediaType, "v1");
      const ref = `${fake.host}/${repo}:v1`;
      await assert.rejects(pullImage(env.client, ref), NotFoundError);
      await assertNothingLeft(ref);
      const resolved = await pullImage(env.client, ref, { allowForeignLayers: true });
      assert.equal(await execRun(resolved, "cat", "/layer.txt"), `${marker}\n`);
      assert.ok(fake.blobStore.requests.length >= layers.length, "the layers came from their URLs");
      assert.ok(
        fake.blobStore.requests.every((r) => r.headers["authorization"] === undefined),
        "no credentials to a foreign URL",
      );
    });

    it("a Docker schema 1 manifest is refused by name before anything is fetched; nothing left", async () => {
      const fake = await FakeRegistry.start();
      fakes.push(fake);
      const v1 = { schemaVersion: 1, name: "t19c/old", tag: "v1", architecture: "amd64", fsLayers: [], history: [] };
      fake.putManifest("t19c/old", v1, "application/vnd.docker.distribution.manifest.v1+prettyjws", "v1");
      const ref = `${fake.host}/t19c/old:v1`;
      await assert.rejects(pullImage(env.client, ref), (e: unknown) => {
        assert.ok(e instanceof CtrexecError && e.code === "FAILED_PRECONDITION", String(e));
        assert.match(e.message, /schema 1/);
        return true;
      });
      await assertNothingLeft(ref);
    });

    it("progress: every blob ends in done or exists, layers download in layer order, bytes only grow", async () => {
      const { ref, image } = await fakeWith("t19c/progress");
      const events: PullProgress[] = [];
      await pullImage(env.client, ref, { onProgress: (e) => events.push(e), maxConcurrentDownloads: 1 });
      assert.deepEqual(events[0], { name: ref, digest: "", kind: "manifest", state: "resolving" });
      const blobs = [image.config.digest, image.manifest.digest, ...image.layers.map((l) => l.descriptor.digest)];
      for (const d of blobs) {
        const mine = events.filter((e) => e.digest === d);
        assert.ok(mine.length > 0, `no events for ${d}`);
        assert.ok(["done", "exists"].includes(mine[mine.length - 1]!.state), `${d} ended in ${mine[mine.length - 1]!.state}`);
        const bytes = mine.filter((e) => e.current !== undefined).map((e) => e.current!);
        assert.deepEqual(
          bytes,
          [...bytes].sort((a, b) => a - b),
          `${d}: bytes went back`,
        );
      }
      const started = events.filter((e) => e.kind === "layer" && e.state === "downloading" && e.current === 0).map((e) => e.digest);
      assert.deepEqual(
        started,
        image.layers.map((l) => l.descriptor.digest),
        "download order",
      );
    });

    it("a layer that does not hash to its digest: DataLossError naming it; nothing left", async () => {
      const { fake, ref, layer } = await fakeWith("t19c/wrong");
      fake.on(blobPath("t19c/wrong", layer), { kind: "wrong-digest" });
      await noStrayErrors(() =>
        assert.rejects(pullImage(env.client, ref), (e: unknown) => {
          assert.ok(e instanceof DataLossError, String(e));
          assert.ok(e.message.includes(layer), e.message);
          return true;
        }),
      );
      await assertNothingLeft(ref);
    });

    it("a layer cut off once is fetched again; one cut off every time fails, leaving nothing", async () => {
      const once = await fakeWith("t19c/cut-once");
      once.fake.on(blobPath("t19c/cut-once", once.layer), { kind: "truncate", after: 100_000 }, 1);
      const resolved = await pullImage(env.client, once.ref);
      assert.equal(await execRun(resolved, "cat", "/layer.txt"), `${once.marker}\n`);
      await removeImages();

      const always = await fakeWith("t19c/cut-always");
      always.fake.on(blobPath("t19c/cut-always", always.layer), { kind: "truncate", after: 100_000 });
      await noStrayErrors(() =>
        assert.rejects(pullImage(env.client, always.ref), (e: unknown) => e instanceof UnavailableError || e instanceof DataLossError),
      );
      await assertNothingLeft(always.ref);
    });

    it("503s on the manifest and a blob, then success: the pull retries and the image runs", async () => {
      const { fake, ref, marker, layer } = await fakeWith("t19c/flaky");
      fake.on(manifestPath("t19c/flaky", "v1"), { kind: "status", status: 503 }, 2);
      fake.on(blobPath("t19c/flaky", layer), { kind: "status", status: 503 }, 1);
      await pullImage(env.client, ref);
      assert.equal(await ctrRun(ref, "cat", "/layer.txt"), `${marker}\n`);
    });

    it("a blob redirected to another origin is fetched there without the registry's Authorization", async () => {
      const creds = { username: "u", password: "p" };
      const { fake, ref, marker, layer } = await fakeWith("t19c/redirect", { kind: "basic", ...creds });
      fake.on(blobPath("t19c/redirect", layer), { kind: "redirect" });
      await pullImage(env.client, ref, { credentials: creds });
      assert.ok(fake.blobStore.requests.length > 0, "nothing went to the blob store");
      for (const r of fake.blobStore.requests) assert.equal(r.headers.authorization, undefined, "credentials went to another origin");
      assert.ok(
        fake.requests.some((r) => r.headers.authorization?.startsWith("Basic ")),
        "the registry itself never got them",
      );
      assert.equal(await execRun(ref, "cat", "/layer.txt"), `${marker}\n`);
    });

    it("Bearer tokens from the token server: with credentials it pulls; without, UnauthenticatedError; nothing left", async () => {
      const creds = { username: "tok", password: "en" };
      const { fake, ref, marker } = await fakeWith("t19c/bearer", { kind: "bearer", ...creds });
      const noConfig = join(work, "no-docker-config-bearer");
      await mkdir(noConfig, { recursive: true });
      await assert.rejects(pullImage(env.client, ref, { dockerConfigDir: noConfig }), (e: unknown) => {
        assert.ok(e instanceof UnauthenticatedError, String(e));
        assert.match(e.message, /ctrexec login/);
        return true;
      });
      await assertNothingLeft(ref);
      const resolved = await pullImage(env.client, ref, { dockerConfigDir: noConfig, credentials: creds });
      assert.ok(fake.tokenServer.requests.length > 0, "no token was asked for");
      assert.equal(await execRun(resolved, "cat", "/layer.txt"), `${marker}\n`);
    });

    it("a layer that stalls mid-body: cancel ends the pull with CanceledError; nothing left", async () => {
      const { fake, ref, layer } = await fakeWith("t19c/stall");
      fake.on(blobPath("t19c/stall", layer), { kind: "stall", after: 100_000 });
      const ac = new AbortController();
      const pull = pullImage(env.client, ref, { signal: ac.signal });
      // Cancel a moment after the layer was asked for: by then the registry has sent all it will of it.
      const path = blobPath("t19c/stall", layer);
      const poll = setInterval(() => {
        if (!fake.requests.some((r) => r.url.startsWith(path))) return;
        clearInterval(poll);
        setTimeout(() => ac.abort(), 200);
      }, 10);
      pull.finally(() => clearInterval(poll)).catch(() => {});
      await noStrayErrors(() => assert.rejects(pull, CanceledError));
      await assertNothingLeft(ref);
    });
  });

  it("the registry helper cleans up: stop() ends the registry and removes its dir", async () => {
    const reg = await startRegistry({ dir: work });
    const res = await fetch(`${reg.url}/v2/`);
    assert.equal(res.status, 200);
    await reg.stop();
    await assert.rejects(fetch(`${reg.url}/v2/`));
    await assert.rejects(run("test", ["-e", reg.dir]));
    await rm(reg.dir, { recursive: true, force: true });
  });
});
