import { createHash } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import type { Descriptor, ImageRecord } from "../containerd/types.js";
import { DataLossError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../errors.js";
import { INDEX_TYPES, MANIFEST_TYPES } from "./media-types.js";
import { choosePlatform, formatPlatform, hostPlatform, normalizePlatform, type Platform, platformRank } from "./platform.js";

/**
 * Images from containerd's image store, unpacked into its snapshotter the way containerd's unpacker does it:
 * index → the manifest for this platform → config → layers; each layer applied with the Diff service onto a
 * snapshot of the previous one, committed under its chain ID, and the chain recorded on the config blob
 * (a `containerd.io/gc.ref.snapshot.<snapshotter>` label) so containerd's GC keeps the snapshots with the image.
 */

export const DEFAULT_SNAPSHOTTER = "overlayfs";

/** The parts of an OCI image config a run takes defaults from. */
export interface ImageConfig {
  env: string[];
  workingDir: string;
  user: string;
  entrypoint: string[];
  cmd: string[];
}

export interface ResolvedImage {
  name: string;
  /** What the name points to: the index for a multi-platform image (docker's "Digest:"), else the manifest. */
  target: Descriptor;
  /** The manifest for the platform. */
  manifest: Descriptor;
  config: Descriptor;
  imageConfig: ImageConfig;
  layers: Descriptor[];
  diffIds: string[];
  /** The chain ID of each layer; the last names the whole root. */
  chainIds: string[];
}

/** An image index as JSON (OCI index or Docker manifest list). */
export interface IndexJson {
  schemaVersion?: number;
  mediaType?: string;
  manifests?: (Descriptor & { platform?: Platform })[];
}

/** An image manifest as JSON (OCI or Docker schema 2). */
export interface ManifestJson {
  schemaVersion?: number;
  mediaType?: string;
  config?: Descriptor;
  layers?: Descriptor[];
}

/** An image config as JSON: the parts ctrexec reads. */
export interface ConfigJson {
  os?: string;
  architecture?: string;
  variant?: string;
  config?: { Env?: string[] | null; WorkingDir?: string; User?: string; Entrypoint?: string[] | null; Cmd?: string[] | null };
  rootfs?: { type?: string; diff_ids?: string[] };
}

/** containerd's chain IDs: the first layer's diff ID, then sha256 of "<parent chain> <diff ID>". */
export function chainIds(diffIds: readonly string[]): string[] {
  const out: string[] = [];
  for (const d of diffIds) {
    const prev = out[out.length - 1];
    out.push(prev === undefined ? d : `sha256:${createHash("sha256").update(`${prev} ${d}`).digest("hex")}`);
  }
  return out;
}

/** The most a manifest, index or config may be (what the registry client reads whole, too). */
const MAX_JSON_BYTES = 8 << 20;

async function readJson<T>(client: ContainerdClient, d: Descriptor): Promise<T> {
  if (!(d.size <= MAX_JSON_BYTES)) {
    throw new FailedPreconditionError(`content ${d.digest} is ${d.size} bytes, more than the ${MAX_JSON_BYTES} a manifest or config may be`);
  }
  let bytes: Buffer;
  try {
    // The stored blob's own size first: a manifest may name any blob (a large layer) with a small size.
    const info = await client.content.info(d.digest);
    if (info.size !== d.size) {
      throw new DataLossError(`content ${d.digest} is ${info.size} bytes in the store, but the image's descriptor says ${d.size}`);
    }
    bytes = await client.content.read(d.digest);
  } catch (err) {
    if (err instanceof NotFoundError) {
      throw new FailedPreconditionError(
        `content ${d.digest} of the image is missing from containerd's content store: pull or import the image again`,
        { cause: err },
      );
    }
    throw err;
  }
  try {
    return JSON.parse(bytes.toString("utf8")) as T;
  } catch (err) {
    throw new FailedPreconditionError(`content ${d.digest} of the image is not valid JSON: pull or import the image again`, { cause: err });
  }
}

/** The store's record of the image `name`, or undefined when there is none. */
export async function findImageRecord(client: ContainerdClient, name: string): Promise<ImageRecord | undefined> {
  return client.images.get(name).catch((err: unknown) => {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  });
}

/** What to say when the store has no image `ref`. */
export function imageNotFound(client: ContainerdClient, ref: string): NotFoundError {
  return new NotFoundError(
    `image ${ref} not found in namespace ${client.namespace}: pull it (ctrexec pull ${ref}, or pull: "missing") or import it (ctr -n ${client.namespace} images import IMAGE.tar)`,
  );
}

/** Resolves a record of the store for this host's platform (or `platform`): index → manifest → config. */
export async function resolveRecord(client: ContainerdClient, record: ImageRecord, platform: Platform = hostPlatform()): Promise<ResolvedImage> {
  const ref = record.name;
  if (!record.target) throw new FailedPreconditionError(`image ${ref} has no target`);
  let manifestDesc: Descriptor = record.target;
  for (let depth = 0; INDEX_TYPES.has(manifestDesc.mediaType); depth++) {
    const index = await readJson<IndexJson>(client, manifestDesc);
    manifestDesc = pickManifest(ref, index, platform, depth);
  }
  if (!MANIFEST_TYPES.has(manifestDesc.mediaType)) {
    throw new FailedPreconditionError(`image ${ref}: unsupported manifest type ${manifestDesc.mediaType}`);
  }
  const manifest = await readJson<ManifestJson>(client, manifestDesc);
  const configDesc = checkManifest(ref, manifest);
  const config = await readJson<ConfigJson>(client, configDesc);
  return resolvedImage(ref, record.target, manifestDesc, manifest, config, platform);
}

/** The manifest of an index for `platform`, or a NotFoundError listing what the index has. */
export function pickManifest(ref: string, index: IndexJson, platform: Platform, depth = 0): Descriptor {
  if (depth > 2) throw new FailedPreconditionError(`image ${ref}: indexes nested more than 3 deep`);
  const candidates = (index.manifests ?? []).filter((m) => MANIFEST_TYPES.has(m.mediaType) || INDEX_TYPES.has(m.mediaType));
  const match = choosePlatform(candidates, platform);
  if (!match) {
    const have = candidates
      .map((m) => (m.platform?.os && m.platform.architecture ? formatPlatform(normalizePlatform(m.platform)) : undefined))
      .filter((p) => p !== undefined && p !== "unknown/unknown");
    throw new NotFoundError(`image ${ref} has no ${formatPlatform(platform)} variant (it has: ${[...new Set(have)].join(", ") || "none"})`);
  }
  const { platform: _p, ...desc } = match;
  return desc;
}

/** A manifest's config descriptor, after checking the manifest is one ctrexec can use. */
export function checkManifest(ref: string, manifest: ManifestJson): Descriptor {
  if (manifest.schemaVersion !== undefined && manifest.schemaVersion !== 2) {
    throw new FailedPreconditionError(`image ${ref}: manifest schema version ${manifest.schemaVersion} is not supported (only 2)`);
  }
  if (!manifest.config?.digest) throw new FailedPreconditionError(`image ${ref}: the manifest has no config`);
  return manifest.config;
}

/** The resolved image from its manifest and config, checked against the platform asked for. */
export function resolvedImage(
  name: string,
  target: Descriptor,
  manifestDesc: Descriptor,
  manifest: ManifestJson,
  config: ConfigJson,
  platform: Platform,
): ResolvedImage {
  const configDesc = checkManifest(name, manifest);
  const layers = manifest.layers ?? [];
  if (
    config.architecture &&
    platformRank(platform, {
      os: config.os ?? platform.os,
      architecture: config.architecture,
      ...(config.variant ? { variant: config.variant } : {}),
    }) === undefined
  ) {
    throw new FailedPreconditionError(`image ${name} is for ${config.os ?? "?"}/${config.architecture}, not ${formatPlatform(platform)}`);
  }
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== layers.length) {
    throw new FailedPreconditionError(`image ${name}: ${layers.length} layers but ${diffIds.length} diff IDs in its config`);
  }
  const c = config.config ?? {};
  return {
    name,
    target,
    manifest: manifestDesc,
    config: configDesc,
    imageConfig: {
      env: c.Env ?? [],
      workingDir: c.WorkingDir ?? "",
      user: c.User ?? "",
      entrypoint: c.Entrypoint ?? [],
      cmd: c.Cmd ?? [],
    },
    layers,
    diffIds,
    chainIds: chainIds(diffIds),
  };
}

/** Applies an image's config to a process: its env under the caller's, its cwd and user unless given, and its entrypoint + cmd when no args are given. */
export function withImageDefaults<T extends { args?: string[]; env?: string[]; cwd?: string; user?: string }>(meta: T, config: ImageConfig): T {
  const out = { ...meta };
  out.env = [...config.env, ...(meta.env ?? [])];
  if (!meta.cwd && config.workingDir) out.cwd = config.workingDir;
  if (!meta.user && config.user) out.user = config.user;
  if (!meta.args?.length) {
    const args = [...config.entrypoint, ...config.cmd];
    if (args.length === 0) throw new InvalidArgumentError("no command given, and the image has no entrypoint or cmd", { field: "args" });
    out.args = args;
  } else if (config.entrypoint.length) {
    out.args = [...config.entrypoint, ...meta.args];
  }
  return out;
}
