import { spawn } from "node:child_process";
import { createCipheriv, createHash } from "node:crypto";
import { createWriteStream } from "node:fs";
import { lstat, mkdir, readdir, readFile, readlink, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip, gzipSync } from "node:zlib";

/** One entry of a layer: a directory, a file with content, a symlink, or a whiteout of a lower path. */
export type LayerEntry =
  | { type: "dir"; path: string; mode?: number }
  | { type: "file"; path: string; content: Buffer | string; mode?: number }
  | { type: "symlink"; path: string; target: string };

function octal(n: number, width: number): string {
  return `${n.toString(8).padStart(width - 1, "0")}\0`;
}

function header(name: string, type: "0" | "2" | "5", size: number, mode: number, link = ""): Buffer {
  const h = Buffer.alloc(512);
  let prefix = "";
  let base = name;
  if (Buffer.byteLength(name) > 100) {
    const cut = name.lastIndexOf("/", 154);
    prefix = name.slice(0, cut);
    base = name.slice(cut + 1);
  }
  h.write(base, 0, 100);
  h.write(octal(mode, 8), 100);
  h.write(octal(0, 8), 108);
  h.write(octal(0, 8), 116);
  h.write(octal(size, 12), 124);
  h.write(octal(1234567890, 12), 136);
  h.write("        ", 148);
  h.write(type, 156);
  h.write(link, 157, 100);
  h.write("ustar\0", 257);
  h.write("00", 263);
  h.write(prefix, 345, 155);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${octal(sum, 7)} `, 148);
  return h;
}

/** A ustar archive of the entries (enough for image layers: no long link names, uid/gid 0). */
export function tar(entries: readonly LayerEntry[]): Buffer {
  const parts: Buffer[] = [];
  for (const e of entries) {
    if (e.type === "dir") parts.push(header(e.path.replace(/\/?$/, "/"), "5", 0, e.mode ?? 0o755));
    else if (e.type === "symlink") parts.push(header(e.path, "2", 0, 0o777, e.target));
    else {
      const data = Buffer.from(e.content);
      parts.push(header(e.path, "0", data.length, e.mode ?? 0o644), data, Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

/** The entries of a directory tree, paths relative to it, directories before their contents. */
export async function treeEntries(dir: string, skip: (rel: string) => boolean = () => false, rel = ""): Promise<LayerEntry[]> {
  const out: LayerEntry[] = [];
  for (const name of (await readdir(join(dir, rel))).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    if (skip(r)) continue;
    const st = await lstat(join(dir, r));
    if (st.isSymbolicLink()) out.push({ type: "symlink", path: r, target: await readlink(join(dir, r)) });
    else if (st.isDirectory()) {
      out.push({ type: "dir", path: r, mode: st.mode & 0o7777 });
      out.push(...(await treeEntries(dir, skip, r)));
    } else if (st.isFile()) out.push({ type: "file", path: r, content: await readFile(join(dir, r)), mode: st.mode & 0o7777 });
  }
  return out;
}

const sha = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

/**
 * Writes an OCI image archive (oci-layout, index.json, blobs) that `ctr images import` reads, with the given
 * layers (gzipped) and image config, named `name`.
 */
export async function writeOciArchive(
  path: string,
  name: string,
  layers: readonly LayerEntry[][],
  config: { Env?: string[]; WorkingDir?: string; User?: string; Entrypoint?: string[]; Cmd?: string[] },
  architecture = process.arch === "x64" ? "amd64" : process.arch,
): Promise<void> {
  const blobs: { digest: string; data: Buffer }[] = [];
  const layerDescs = [];
  const diffIds = [];
  for (const entries of layers) {
    const raw = tar(entries);
    const gz = gzipSync(raw);
    diffIds.push(sha(raw));
    blobs.push({ digest: sha(gz), data: gz });
    layerDescs.push({ mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: sha(gz), size: gz.length });
  }
  const cfg = Buffer.from(JSON.stringify({ architecture, os: "linux", config, rootfs: { type: "layers", diff_ids: diffIds } }));
  blobs.push({ digest: sha(cfg), data: cfg });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: sha(cfg), size: cfg.length },
      layers: layerDescs,
    }),
  );
  blobs.push({ digest: sha(manifest), data: manifest });
  const index = {
    schemaVersion: 2,
    manifests: [
      {
        mediaType: "application/vnd.oci.image.manifest.v1+json",
        digest: sha(manifest),
        size: manifest.length,
        annotations: { "io.containerd.image.name": name, "org.opencontainers.image.ref.name": name.split(":").pop() },
      },
    ],
  };
  const entries: LayerEntry[] = [
    { type: "file", path: "oci-layout", content: JSON.stringify({ imageLayoutVersion: "1.0.0" }) },
    { type: "file", path: "index.json", content: JSON.stringify(index) },
    { type: "dir", path: "blobs" },
    { type: "dir", path: "blobs/sha256" },
    ...blobs.map((b): LayerEntry => ({ type: "file", path: `blobs/sha256/${b.digest.slice(7)}`, content: b.data })),
  ];
  await writeFile(path, tar(entries));
}

// ---------------------------------------------------------------------------------------------------------------
// OCI layout directories for registry tests: images with gzip, zstd or uncompressed layers, OCI or Docker media
// types, multi-platform indexes, and large images of incompressible data written as streams.

/** How a layer blob is compressed. zstd goes through the `zstd` CLI: Node 20's zlib has no zstd. */
export type LayerCompression = "gzip" | "zstd" | "none";

export interface ImagePlatform {
  os: string;
  architecture: string;
  variant?: string;
}

/** A content descriptor as it appears in manifests and indexes. */
export interface OciDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: ImagePlatform;
  annotations?: Record<string, string>;
}

/** A layer blob in a layout, with the digest of its uncompressed tar. */
export interface BuiltLayer {
  descriptor: OciDescriptor;
  diffId: string;
}

/** An image manifest written into a layout. */
export interface BuiltImage {
  manifest: OciDescriptor;
  config: OciDescriptor;
  layers: BuiltLayer[];
  platform: ImagePlatform;
}

export interface ImageConfigInput {
  Env?: string[];
  WorkingDir?: string;
  User?: string;
  Entrypoint?: string[];
  Cmd?: string[];
}

const OCI = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: {
    gzip: "application/vnd.oci.image.layer.v1.tar+gzip",
    zstd: "application/vnd.oci.image.layer.v1.tar+zstd",
    none: "application/vnd.oci.image.layer.v1.tar",
  },
} as const;
const DOCKER = {
  index: "application/vnd.docker.distribution.manifest.list.v2+json",
  manifest: "application/vnd.docker.distribution.manifest.v2+json",
  config: "application/vnd.docker.container.image.v1+json",
  // Docker's schema 2 has no zstd layer type; "none" is its (rarely seen) uncompressed tar.
  layer: { gzip: "application/vnd.docker.image.rootfs.diff.tar.gzip", zstd: undefined, none: "application/vnd.docker.image.rootfs.diff.tar" },
} as const;

/** The platform of this host, as images name it. */
export function hostImagePlatform(): ImagePlatform {
  const arch = process.arch === "x64" ? "amd64" : process.arch;
  return arch === "arm64" ? { os: "linux", architecture: arch, variant: "v8" } : { os: "linux", architecture: arch };
}

/** A stream transform that hashes what passes through. */
class Hasher extends Transform {
  readonly hash = createHash("sha256");
  size = 0;
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.hash.update(chunk);
    this.size += chunk.length;
    cb(null, chunk);
  }
  digest(): string {
    return `sha256:${this.hash.digest("hex")}`;
  }
}

/**
 * Writes an OCI image layout directory (oci-layout, blobs/sha256, index.json) that skopeo reads as `oci:DIR:TAG`.
 * Add blobs, layers, images and indexes, `tag` what index.json should name, then `finish`.
 */
export class OciLayoutWriter {
  private readonly refs: OciDescriptor[] = [];
  private tmpCount = 0;

  private constructor(readonly dir: string) {}

  static async create(dir: string): Promise<OciLayoutWriter> {
    await mkdir(join(dir, "blobs", "sha256"), { recursive: true });
    await writeFile(join(dir, "oci-layout"), JSON.stringify({ imageLayoutVersion: "1.0.0" }));
    return new OciLayoutWriter(dir);
  }

  async addBlob(data: Buffer | string): Promise<{ digest: string; size: number }> {
    const b = Buffer.from(data);
    const digest = sha(b);
    await writeFile(join(this.dir, "blobs", "sha256", digest.slice(7)), b);
    return { digest, size: b.length };
  }

  /** A layer of the given entries (built in memory: for small layers). */
  addLayer(entries: readonly LayerEntry[], compression: LayerCompression = "gzip", docker = false): Promise<BuiltLayer> {
    return this.addLayerStream(() => Readable.from([tar(entries)]), compression, docker);
  }

  /**
   * A layer from a stream of uncompressed tar bytes, compressed and hashed on the way to disk: never whole in
   * memory, so layers can be far larger than the heap.
   */
  async addLayerStream(source: () => Readable, compression: LayerCompression = "gzip", docker = false): Promise<BuiltLayer> {
    const mediaType = (docker ? DOCKER : OCI).layer[compression];
    if (!mediaType) throw new Error(`Docker schema 2 has no ${compression} layer media type`);
    const tmp = join(this.dir, `layer-${process.pid}-${++this.tmpCount}.tmp`);
    const raw = new Hasher();
    const out = new Hasher();
    try {
      if (compression === "zstd") {
        const child = spawn("zstd", ["-q", "-3", "-c"], { stdio: ["pipe", "pipe", "inherit"] });
        const exited = new Promise<number | null>((resolve) => child.once("close", resolve));
        await Promise.all([pipeline(source(), raw, child.stdin), pipeline(child.stdout, out, createWriteStream(tmp))]);
        const code = await exited;
        if (code !== 0) throw new Error(`zstd exited with ${code}`);
      } else if (compression === "gzip") {
        await pipeline(source(), raw, createGzip(), out, createWriteStream(tmp));
      } else {
        await pipeline(source(), raw, out, createWriteStream(tmp));
      }
      const digest = out.digest();
      await rename(tmp, join(this.dir, "blobs", "sha256", digest.slice(7)));
      return { descriptor: { mediaType, digest, size: out.size }, diffId: raw.digest() };
    } finally {
      await rm(tmp, { force: true });
    }
  }

  /** An image manifest and its config over the given layers (entries are built as `compression` layers). */
  async addImage(options: {
    layers: readonly (BuiltLayer | readonly LayerEntry[])[];
    compression?: LayerCompression;
    config?: ImageConfigInput;
    platform?: ImagePlatform;
    docker?: boolean;
    annotations?: Record<string, string>;
  }): Promise<BuiltImage> {
    const docker = options.docker ?? false;
    const types = docker ? DOCKER : OCI;
    const platform = options.platform ?? hostImagePlatform();
    const layers: BuiltLayer[] = [];
    for (const l of options.layers) layers.push("diffId" in l ? l : await this.addLayer(l, options.compression ?? "gzip", docker));
    const cfg = await this.addBlob(
      JSON.stringify({
        architecture: platform.architecture,
        os: platform.os,
        ...(platform.variant ? { variant: platform.variant } : {}),
        config: options.config ?? {},
        rootfs: { type: "layers", diff_ids: layers.map((l) => l.diffId) },
      }),
    );
    const config: OciDescriptor = { mediaType: types.config, ...cfg };
    const manifestBlob = await this.addBlob(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: types.manifest,
        config,
        layers: layers.map((l) => l.descriptor),
        ...(options.annotations ? { annotations: options.annotations } : {}),
      }),
    );
    return { manifest: { mediaType: types.manifest, ...manifestBlob, platform }, config, layers, platform };
  }

  /** An index (Docker: a manifest list) of the given manifests, each with its `platform` if it has one. */
  async addIndex(manifests: readonly OciDescriptor[], options: { docker?: boolean } = {}): Promise<OciDescriptor> {
    const mediaType = (options.docker ? DOCKER : OCI).index;
    const blob = await this.addBlob(JSON.stringify({ schemaVersion: 2, mediaType, manifests }));
    return { mediaType, ...blob };
  }

  /** Names `desc` in index.json under `tag` (skopeo's `oci:DIR:TAG`). */
  tag(desc: OciDescriptor, tag: string): void {
    const { platform: _platform, annotations: _annotations, ...plain } = desc;
    this.refs.push({ ...plain, annotations: { "org.opencontainers.image.ref.name": tag } });
  }

  async finish(): Promise<void> {
    await writeFile(join(this.dir, "index.json"), JSON.stringify({ schemaVersion: 2, mediaType: OCI.index, manifests: this.refs }));
  }
}

const BUSYBOX_APPLETS = ["sh", "true", "false", "id", "cat", "echo", "ls", "env", "sleep", "test", "wc", "sha256sum"];

/** A minimal runnable root: /bin/busybox (the host's static one) and the applets tests use, /etc/passwd, /tmp. */
export async function busyboxEntries(): Promise<LayerEntry[]> {
  return [
    { type: "dir", path: "bin" },
    { type: "file", path: "bin/busybox", content: await readFile("/bin/busybox"), mode: 0o755 },
    ...BUSYBOX_APPLETS.map((a): LayerEntry => ({ type: "symlink", path: `bin/${a}`, target: "busybox" })),
    { type: "dir", path: "etc" },
    { type: "file", path: "etc/passwd", content: "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n" },
    { type: "file", path: "etc/group", content: "root:x:0:\nnogroup:x:65534:\n" },
    { type: "dir", path: "tmp", mode: 0o1777 },
    { type: "dir", path: "root", mode: 0o700 },
  ];
}

export const RUNNABLE_CONFIG: ImageConfigInput = { Env: ["PATH=/bin"], Cmd: ["sh", "-c", "echo hello from the image"] };

/**
 * A runnable image for this host in a new layout at `dir`, tagged `tag`: a busybox layer and a small second layer
 * (/layer.txt holding `marker`), both compressed as `compression`.
 */
export async function writeRunnableLayout(
  dir: string,
  options: { tag?: string; compression?: LayerCompression; docker?: boolean; marker?: string } = {},
): Promise<BuiltImage> {
  const layout = await OciLayoutWriter.create(dir);
  const image = await layout.addImage({
    layers: [await busyboxEntries(), [{ type: "file", path: "layer.txt", content: `${options.marker ?? options.compression ?? "gzip"}\n` }]],
    compression: options.compression ?? "gzip",
    config: RUNNABLE_CONFIG,
    ...(options.docker ? { docker: true } : {}),
  });
  layout.tag(image.manifest, options.tag ?? "latest");
  await layout.finish();
  return image;
}

export interface MultiPlatformLayout {
  index: OciDescriptor;
  amd64: BuiltImage;
  arm64: BuiltImage;
  armv7: BuiltImage;
  /** OCI only: a platform-less attestation manifest in the index, as BuildKit adds (Docker lists have none). */
  attestation?: OciDescriptor;
}

/**
 * An index (`docker`: a Docker manifest list of schema 2 manifests) for linux/amd64 (runnable here: busybox),
 * linux/arm64/v8 and linux/arm/v7 (one small layer naming the platform, /platform.txt), tagged `tag`.
 */
export async function writeMultiPlatformLayout(dir: string, options: { tag?: string; docker?: boolean } = {}): Promise<MultiPlatformLayout> {
  const docker = options.docker ?? false;
  const layout = await OciLayoutWriter.create(dir);
  const platformLayer = (p: string): LayerEntry[] => [{ type: "file", path: "platform.txt", content: `${p}\n` }];
  const amd64 = await layout.addImage({
    layers: [await busyboxEntries(), platformLayer("linux/amd64")],
    config: RUNNABLE_CONFIG,
    platform: { os: "linux", architecture: "amd64" },
    docker,
  });
  const arm64 = await layout.addImage({
    layers: [platformLayer("linux/arm64/v8")],
    config: RUNNABLE_CONFIG,
    platform: { os: "linux", architecture: "arm64", variant: "v8" },
    docker,
  });
  const armv7 = await layout.addImage({
    layers: [platformLayer("linux/arm/v7")],
    config: RUNNABLE_CONFIG,
    platform: { os: "linux", architecture: "arm", variant: "v7" },
    docker,
  });
  const manifests = [arm64.manifest, amd64.manifest, armv7.manifest];
  let attestation: OciDescriptor | undefined;
  if (!docker) {
    // What BuildKit puts next to each image: an unknown/unknown manifest that refers to its image by digest.
    const att = await layout.addImage({
      layers: [[{ type: "file", path: "attestation.json", content: "{}" }]],
      platform: { os: "unknown", architecture: "unknown" },
    });
    attestation = {
      ...att.manifest,
      annotations: { "vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": amd64.manifest.digest },
    };
    manifests.push(attestation);
  }
  const index = await layout.addIndex(manifests, { docker });
  layout.tag(index, options.tag ?? "latest");
  await layout.finish();
  return { index, amd64, arm64, armv7, ...(attestation ? { attestation } : {}) };
}

/**
 * `size` bytes of incompressible data, the same for the same seed (AES-256-CTR over zeros): images of fixed size
 * and digests, and no RNG cost in a benchmark's set-up.
 */
export function randomStream(size: number, seed: string): Readable {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  const chunk = Buffer.alloc(1 << 20);
  let left = size;
  return new Readable({
    read() {
      if (left === 0) {
        this.push(null);
        return;
      }
      const n = Math.min(left, chunk.length);
      left -= n;
      this.push(cipher.update(n === chunk.length ? chunk : chunk.subarray(0, n)));
    },
  });
}

/** A tar stream of one regular file `path` of `size` bytes from `data` (uid/gid 0, mode 0644). */
function singleFileTar(path: string, size: number, data: Readable): Readable {
  return Readable.from(
    (async function* () {
      yield header(path, "0", size, 0o644);
      for await (const c of data) yield c as Buffer;
      yield Buffer.alloc(((512 - (size % 512)) % 512) + 1024);
    })(),
  );
}

/**
 * An image of `layers` layers (default 3) of `layerSize` bytes of incompressible data each (default 20 MiB: a
 * ~60 MB image), gzip-compressed, tagged `tag`, for the pull benchmark. The same seed gives the same digests; a
 * new seed gives new content (a cold content store without deleting anything).
 */
export async function writeRandomLayout(
  dir: string,
  options: { tag?: string; layers?: number; layerSize?: number; seed?: string; compression?: LayerCompression } = {},
): Promise<BuiltImage> {
  const layout = await OciLayoutWriter.create(dir);
  const size = options.layerSize ?? 20 << 20;
  const seed = options.seed ?? "ctrexec-bench";
  const layers: BuiltLayer[] = [];
  for (let i = 0; i < (options.layers ?? 3); i++) {
    layers.push(
      await layout.addLayerStream(() => singleFileTar(`data/${i}.bin`, size, randomStream(size, `${seed}/${i}`)), options.compression ?? "gzip"),
    );
  }
  const image = await layout.addImage({ layers, config: { Env: ["PATH=/bin"] } });
  layout.tag(image.manifest, options.tag ?? "latest");
  await layout.finish();
  return image;
}

/** An image with one layer holding a single file of `size` bytes (default 500 MiB), written as a stream. */
export function writeLargeLayerLayout(
  dir: string,
  options: { tag?: string; size?: number; seed?: string; compression?: LayerCompression } = {},
): Promise<BuiltImage> {
  return writeRandomLayout(dir, {
    layers: 1,
    layerSize: options.size ?? 500 << 20,
    ...(options.tag ? { tag: options.tag } : {}),
    ...(options.seed ? { seed: options.seed } : {}),
    ...(options.compression ? { compression: options.compression } : {}),
  });
}
