import { createHash } from "node:crypto";
import { lstat, readdir, readFile, readlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

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
