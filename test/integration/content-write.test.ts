/**
 * Content.Write and the calls a pull makes around it (Content, Images, Leases), against the real containerd.
 * Each test has its own namespace (t19b-*), removes what it made and checks that nothing is left: no ingest,
 * no blob, no lease, no image.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { ContainerdClient } from "../../src/containerd/client.js";
import { GrpcTransport } from "../../src/containerd/transport.js";
import { AlreadyExistsError, CanceledError, DataLossError, InvalidArgumentError, NotFoundError } from "../../src/errors.js";
import { Content, WriteAction } from "../../src/gen/content_pb.js";

const MiB = 1024 * 1024;
const root = new ContainerdClient();

const sha256 = (b: Uint8Array): string => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/** Yields `data` in chunks of uneven sizes (as a network would), each a view, not a copy. */
async function* chunks(data: Buffer, size = 100_003): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

/**
 * A fresh namespace and a client whose calls carry a lease, as a pull's do: containerd's GC (which runs for every
 * namespace, whenever anything is deleted) cannot take a blob between its write and the test's next look.
 * `clean` asserts the namespace holds nothing the test did not remove, then drops the lease; `remove` removes
 * whatever is left and the namespace.
 */
async function namespace(name: string): Promise<{ client: ContainerdClient; clean(): Promise<void>; remove(): Promise<void> }> {
  const ns = `t19b-${name}-${process.pid}-${randomBytes(3).toString("hex")}`;
  await root.namespaces.create(ns);
  const plain = root.withNamespace(ns);
  await plain.leases.create("t19b-test");
  const client = plain.withLease("t19b-test");
  return {
    client,
    async clean() {
      const left = {
        ingests: (await plain.content.listStatuses()).map((s) => s.ref),
        blobs: (await plain.content.list()).map((b) => b.digest),
        images: (await plain.images.list()).map((i) => i.name),
      };
      assert.deepEqual(left, { ingests: [], blobs: [], images: [] }, "left in the namespace");
      await plain.leases.delete("t19b-test", { sync: true });
      assert.deepEqual(
        (await plain.leases.list()).map((l) => l.id),
        [],
        "leases left",
      );
    },
    async remove() {
      for (const i of await plain.images.list().catch(() => [])) await plain.images.delete(i.name).catch(() => {});
      for (const l of await plain.leases.list().catch(() => [])) await plain.leases.delete(l.id).catch(() => {});
      for (const s of await plain.content.listStatuses().catch(() => [])) await plain.content.abort(s.ref).catch(() => {});
      for (const b of await plain.content.list().catch(() => [])) await plain.content.delete(b.digest).catch(() => {});
      await root.namespaces.delete(ns);
    },
  };
}

describe("content write against the real containerd", () => {
  after(() => root.close());

  it("writes a blob from a stream with labels, reads it back, and says 'exists' the second time", async () => {
    const { client, clean, remove } = await namespace("roundtrip");
    try {
      const data = randomBytes(3 * MiB + 12_345);
      const digest = sha256(data);
      const progress: number[] = [];
      const labels = { "ctrexec.test/kind": "roundtrip" };
      const result = await client.content.write("rt-1", chunks(data), { digest, size: data.length }, { labels, onProgress: (n) => progress.push(n) });
      assert.equal(result, "written");
      assert.equal(progress.at(-1), data.length);
      assert.ok(
        progress.every((n, i) => i === 0 || n >= (progress[i - 1] ?? 0)),
        "progress never goes back",
      );
      const info = await client.content.info(digest);
      assert.equal(info.size, data.length);
      assert.deepEqual(info.labels, labels);
      assert.ok((await client.content.read(digest)).equals(data));
      assert.deepEqual(await client.content.listStatuses(), []);
      // A Readable source, and a digest already in the store: nothing is written, no ingest stays.
      assert.equal(await client.content.write("rt-2", Readable.from([data]), { digest, size: data.length }), "exists");
      // Chunks in memory, and an empty blob.
      const empty = Buffer.alloc(0);
      assert.equal(await client.content.write("rt-3", [empty], { digest: sha256(empty), size: 0 }), "written");
      assert.equal((await client.content.info(sha256(empty))).size, 0);
      await client.content.delete(sha256(empty));
      await client.content.delete(digest);
      await assert.rejects(client.content.info(digest), NotFoundError);
      await clean();
    } finally {
      await remove();
    }
  });

  it("refuses a blob whose digest is not the expected one (DataLossError) and leaves no blob or ingest", async () => {
    const { client, clean, remove } = await namespace("baddigest");
    try {
      const data = randomBytes(2 * MiB);
      const wrong = sha256(Buffer.from("something else"));
      const err = await client.content.write("bad-1", chunks(data), { digest: wrong, size: data.length }).catch((e: unknown) => e);
      assert.ok(err instanceof DataLossError, String(err));
      assert.match(err.message, /unexpected commit digest/);
      await assert.rejects(client.content.info(wrong), NotFoundError);
      await assert.rejects(client.content.info(sha256(data)), NotFoundError);
      await clean();
    } finally {
      await remove();
    }
  });

  it("refuses a source shorter or longer than the expected size before committing", async () => {
    const { client, clean, remove } = await namespace("badsize");
    try {
      const data = randomBytes(MiB + 7);
      const digest = sha256(data);
      const short = await client.content.write("short", chunks(data.subarray(0, MiB)), { digest, size: data.length }).catch((e: unknown) => e);
      assert.ok(short instanceof DataLossError, String(short));
      assert.match(short.message, /ended after 1048576 of 1048583 bytes/);
      const long = await client.content.write("long", chunks(data), { digest, size: MiB }).catch((e: unknown) => e);
      assert.ok(long instanceof DataLossError, String(long));
      assert.match(long.message, /more than the 1048576 bytes/);
      await assert.rejects(client.content.info(digest), NotFoundError);
      await clean();
    } finally {
      await remove();
    }
  });

  it("refuses bad arguments naming the field, before calling containerd", async () => {
    const { client, clean, remove } = await namespace("args");
    try {
      const d = sha256(Buffer.from("x"));
      const fields = [
        await client.content.write("", [Buffer.from("x")], { digest: d, size: 1 }).catch((e: unknown) => e),
        await client.content.write("r", [Buffer.from("x")], { digest: "nodigest", size: 1 }).catch((e: unknown) => e),
        await client.content.write("r", [Buffer.from("x")], { digest: d, size: -1 }).catch((e: unknown) => e),
        await client.content.write("r", Buffer.from("x") as unknown as Iterable<Uint8Array>, { digest: d, size: 1 }).catch((e: unknown) => e),
      ].map((e) => (e instanceof InvalidArgumentError ? e.field : String(e)));
      assert.deepEqual(fields, ["ref", "expected.digest", "expected.size", "source"]);
      await clean();
    } finally {
      await remove();
    }
  });

  it("a signal aborts the write mid-stream, and while the source waits: CanceledError, no ingest", async () => {
    const { client, clean, remove } = await namespace("abort");
    try {
      const block = randomBytes(MiB);
      const ac = new AbortController();
      let yielded = 0;
      let finished = false;
      // An endless source that cancels the write once 6 MiB have gone out: no timing involved.
      async function* endless(): AsyncGenerator<Uint8Array> {
        try {
          for (;;) {
            yield block;
            yielded += block.length;
            if (yielded === 6 * MiB) ac.abort(new Error("stop"));
          }
        } finally {
          finished = true;
        }
      }
      const fake = sha256(Buffer.from("never"));
      const err = await client.content
        .write("abort-1", endless(), { digest: fake, size: 1024 * MiB }, { signal: ac.signal })
        .catch((e: unknown) => e);
      assert.ok(err instanceof CanceledError, String(err));
      assert.equal((err.cause as Error).message, "stop");
      assert.equal(finished, true, "the source was closed");

      // A source that never yields again: the signal still ends the write.
      const ac2 = new AbortController();
      let waiting: () => void = () => {};
      const waited = new Promise<void>((resolve) => (waiting = resolve));
      async function* stalls(): AsyncGenerator<Uint8Array> {
        yield block;
        waiting();
        await new Promise(() => {});
      }
      const pending = client.content.write("abort-2", stalls(), { digest: fake, size: 8 * MiB }, { signal: ac2.signal }).catch((e: unknown) => e);
      await waited;
      ac2.abort(new Error("stop 2"));
      const err2 = await pending;
      assert.ok(err2 instanceof CanceledError, String(err2));

      // Already aborted: refused before anything is sent.
      await assert.rejects(client.content.write("abort-3", [block], { digest: fake, size: MiB }, { signal: ac.signal }), CanceledError);
      await clean();
    } finally {
      await remove();
    }
  });

  it("a cancel while a write's first request is on its way leaves no ingest (60 tries at three moments)", async () => {
    const { client, clean, remove } = await namespace("cancel-race");
    try {
      const block = randomBytes(MiB);
      const fake = sha256(Buffer.from("never"));
      for (let i = 0; i < 60; i++) {
        const ac = new AbortController();
        const pending = client.content.write(`race-${i}`, [block], { digest: fake, size: MiB }, { signal: ac.signal }).catch((e: unknown) => e);
        await new Promise<void>((r) => (i % 3 === 0 ? queueMicrotask(r) : i % 3 === 1 ? setImmediate(r) : setTimeout(r, 1)));
        ac.abort(new Error("stop"));
        await pending;
      }
      // A Write that containerd got after our reset makes its ingest a moment later: give such a straggler time
      // to show. (This wait can only let a leak be seen; the code under test leaves none whatever the timing.)
      await new Promise((r) => setTimeout(r, 500));
      await clean();
    } finally {
      await remove();
    }
  });

  it("truncates a partial ingest left under the same ref, then writes the blob whole", async () => {
    const { client, clean, remove } = await namespace("partial");
    const transport = new GrpcTransport("/run/containerd/containerd.sock");
    try {
      const data = randomBytes(2 * MiB);
      const digest = sha256(data);
      // An earlier writer that went away after 1.5 MiB of other bytes, without commit or abort.
      const stale = transport.requestStream(Content.method.write, { namespace: client.namespace }, 10_000, undefined);
      const answers = (async () => {
        const offsets: number[] = [];
        for await (const r of stale.responses()) offsets.push(Number(r.offset));
        return offsets;
      })();
      await stale.send({ action: WriteAction.STAT, ref: "part-1", total: BigInt(data.length), expected: digest });
      await stale.send({ action: WriteAction.WRITE, offset: 0n, data: randomBytes(1.5 * MiB) });
      stale.end();
      // One answer per request (containerd repeats the last one when the stream ends).
      assert.deepEqual((await answers).slice(0, 2), [0, 1.5 * MiB]);
      const [left] = await client.content.listStatuses();
      assert.equal(left?.ref, "part-1");
      assert.equal(left?.offset, 1.5 * MiB);

      assert.equal(await client.content.write("part-1", chunks(data), { digest, size: data.length }), "written");
      assert.ok((await client.content.read(digest)).equals(data));
      await client.content.delete(digest);
      await clean();
    } finally {
      transport.close();
      await remove();
    }
  });

  it("two writers of one ref: the second waits for the first's lock, then finds the blob there", async () => {
    const { client, clean, remove } = await namespace("lock");
    try {
      const data = randomBytes(8 * MiB);
      const digest = sha256(data);
      const results = await Promise.all([
        client.content.write("same", chunks(data), { digest, size: data.length }),
        client.content.write("same", chunks(data), { digest, size: data.length }),
      ]);
      assert.deepEqual(results.sort(), ["exists", "written"]);
      assert.ok((await client.content.read(digest)).equals(data));
      await client.content.delete(digest);
      await clean();
    } finally {
      await remove();
    }
  });

  it("a lease holds what is written under it; addResource makes another lease hold it too", async () => {
    const { client, clean, remove } = await namespace("lease");
    try {
      const data = randomBytes(MiB);
      const digest = sha256(data);
      await client.leases.create("l1");
      await client.leases.create("l2");
      assert.equal(await client.withLease("l1").content.write("lease-1", chunks(data), { digest, size: data.length }), "written");
      assert.deepEqual(await client.leases.listResources("l1"), [{ id: digest, type: "content" }]);
      await client.leases.addResource("l2", { id: digest, type: "content" });
      await client.leases.delete("l1", { sync: true });
      assert.equal((await client.content.info(digest)).size, data.length, "l2 still holds the blob");
      await client.leases.delete("l2", { sync: true });
      await assert.rejects(client.content.info(digest), NotFoundError, "GC took the blob once no lease held it");
      await clean();
    } finally {
      await remove();
    }
  });

  it("creates, updates and deletes an image record", async () => {
    const { client, clean, remove } = await namespace("images");
    try {
      const config = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}');
      const manifest = Buffer.from(
        JSON.stringify({
          schemaVersion: 2,
          mediaType: "application/vnd.oci.image.manifest.v1+json",
          config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha256(config), size: config.length },
          layers: [],
        }),
      );
      await client.leases.create("img");
      const leased = client.withLease("img");
      await leased.content.write("config", [config], { digest: sha256(config), size: config.length });
      await leased.content.write(
        "manifest",
        [manifest],
        { digest: sha256(manifest), size: manifest.length },
        {
          labels: { "containerd.io/gc.ref.content.config": sha256(config) },
        },
      );
      const target = { mediaType: "application/vnd.oci.image.manifest.v1+json", digest: sha256(manifest), size: manifest.length };
      const name = "example.test/t19b/img:1";
      const created = await client.images.create({ name, target, labels: { a: "1" } });
      assert.deepEqual(created.target, { ...target, annotations: {} });
      assert.deepEqual(created.labels, { a: "1" });
      await assert.rejects(client.images.create({ name, target }), AlreadyExistsError);
      const updated = await client.images.update({ name, target, labels: { b: "2" } }, ["labels.b"]);
      assert.deepEqual(updated.labels, { a: "1", b: "2" });
      await client.leases.delete("img", { sync: true });
      assert.equal((await client.content.info(sha256(config))).size, config.length, "the image holds its manifest and config");
      await client.images.delete(name, { sync: true });
      await assert.rejects(client.images.get(name), NotFoundError);
      await assert.rejects(client.content.info(sha256(manifest)), NotFoundError, "GC took the manifest with the image");
      await assert.rejects(client.content.info(sha256(config)), NotFoundError, "and the config it referenced");
      await clean();
    } finally {
      await remove();
    }
  });

  it("a 64 MiB write holds little memory: RSS grows far less than the blob, and few chunks stay alive", async () => {
    const { client, clean, remove } = await namespace("rss");
    try {
      // The source allocates nothing per chunk (views of one block), so what RSS gains is the write's own buffering.
      const block = randomBytes(MiB);
      const hash = createHash("sha256");
      for (let i = 0; i < 64; i++) hash.update(block);
      const digest = `sha256:${hash.digest("hex")}`;
      async function* blocks(fresh: boolean): AsyncGenerator<Uint8Array> {
        for (let i = 0; i < 64; i++) {
          for (let j = 0; j < MiB; j += 64 * 1024) yield fresh ? Buffer.from(block.subarray(j, j + 64 * 1024)) : block.subarray(j, j + 64 * 1024);
        }
      }
      const before = process.memoryUsage().rss;
      let peak = before;
      const sample = () => (peak = Math.max(peak, process.memoryUsage().rss));
      assert.equal(await client.content.write("big", blocks(false), { digest, size: 64 * MiB }, { onProgress: sample }), "written");
      assert.ok(peak - before < 32 * MiB, `RSS grew by ${((peak - before) / MiB).toFixed(1)} MiB`);
      await client.content.delete(digest);

      // Fresh chunks, with a full GC at every answer: what stays alive is what the write holds (bytes in flight),
      // not the blob. (RSS alone would also count garbage not yet collected.)
      setFlagsFromString("--expose-gc");
      const gc = runInNewContext("gc") as () => void;
      gc();
      const base = process.memoryUsage().arrayBuffers;
      let live = 0;
      const measure = () => {
        gc();
        live = Math.max(live, process.memoryUsage().arrayBuffers - base);
      };
      assert.equal(await client.content.write("big-2", blocks(true), { digest, size: 64 * MiB }, { onProgress: measure }), "written");
      assert.ok(live < 16 * MiB, `${(live / MiB).toFixed(1)} MiB of chunks stayed alive`);
      await client.content.delete(digest);
      await clean();
    } finally {
      await remove();
    }
  });
});
