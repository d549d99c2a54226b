import { createHash, randomBytes } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import type { Descriptor } from "../containerd/types.js";
import { AlreadyExistsError, FailedPreconditionError, InvalidArgumentError, NotFoundError } from "../errors.js";

/**
 * Images from containerd's image store, unpacked into its snapshotter the way containerd's unpacker does it:
 * index → the manifest for this platform → config → layers; each layer applied with the Diff service onto a
 * snapshot of the previous one, committed under its chain ID, and the chain recorded on the config blob
 * (a `containerd.io/gc.ref.snapshot.<snapshotter>` label) so containerd's GC keeps the snapshots with the image.
 */

const INDEX_TYPES = new Set(["application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json"]);
const MANIFEST_TYPES = new Set(["application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json"]);

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
  manifest: Descriptor;
  config: Descriptor;
  imageConfig: ImageConfig;
  layers: Descriptor[];
  diffIds: string[];
  /** The chain ID of each layer; the last names the whole root. */
  chainIds: string[];
}

interface Platform {
  os?: string;
  architecture?: string;
  variant?: string;
}

function hostPlatform(): { os: string; architecture: string } {
  const arch = ({ x64: "amd64", arm64: "arm64", arm: "arm", ppc64: "ppc64le", s390x: "s390x", riscv64: "riscv64" } as Record<string, string>)[
    process.arch
  ];
  return { os: "linux", architecture: arch ?? process.arch };
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

async function readJson<T>(client: ContainerdClient, d: Descriptor): Promise<T> {
  try {
    return JSON.parse((await client.content.read(d.digest)).toString("utf8")) as T;
  } catch (err) {
    if (err instanceof NotFoundError) {
      throw new FailedPreconditionError(
        `content ${d.digest} of the image is missing from containerd's content store: pull or import the image again`,
        {
          cause: err,
        },
      );
    }
    throw err;
  }
}

/** Looks an image up by name and resolves it for this host's platform. */
export async function resolveImage(client: ContainerdClient, ref: string): Promise<ResolvedImage> {
  const record = await client.images.get(ref).catch((err: unknown) => {
    if (err instanceof NotFoundError) {
      throw new NotFoundError(
        `image ${ref} not found in namespace ${client.namespace}: import it first, e.g. ctr -n ${client.namespace} images import IMAGE.tar`,
        { cause: err },
      );
    }
    throw err;
  });
  if (!record.target) throw new FailedPreconditionError(`image ${ref} has no target`);
  let manifestDesc: Descriptor = record.target;
  const want = hostPlatform();
  if (INDEX_TYPES.has(manifestDesc.mediaType)) {
    const index = await readJson<{ manifests?: (Descriptor & { platform?: Platform })[] }>(client, manifestDesc);
    const match = (index.manifests ?? []).find((m) => m.platform?.os === want.os && m.platform?.architecture === want.architecture);
    if (!match) {
      const have = (index.manifests ?? []).map((m) => `${m.platform?.os}/${m.platform?.architecture}`).join(", ");
      throw new FailedPreconditionError(`image ${ref} has no ${want.os}/${want.architecture} variant (it has: ${have || "none"})`);
    }
    manifestDesc = match;
  }
  if (!MANIFEST_TYPES.has(manifestDesc.mediaType)) {
    throw new FailedPreconditionError(`image ${ref}: unsupported manifest type ${manifestDesc.mediaType}`);
  }
  const manifest = await readJson<{ config: Descriptor; layers: Descriptor[] }>(client, manifestDesc);
  const config = await readJson<{
    os?: string;
    architecture?: string;
    config?: { Env?: string[]; WorkingDir?: string; User?: string; Entrypoint?: string[] | null; Cmd?: string[] | null };
    rootfs?: { diff_ids?: string[] };
  }>(client, manifest.config);
  if (config.architecture && config.architecture !== want.architecture) {
    throw new FailedPreconditionError(`image ${ref} is for ${config.os ?? "?"}/${config.architecture}, not ${want.os}/${want.architecture}`);
  }
  const diffIds = config.rootfs?.diff_ids ?? [];
  if (diffIds.length !== manifest.layers.length) {
    throw new FailedPreconditionError(`image ${ref}: ${manifest.layers.length} layers but ${diffIds.length} diff IDs in its config`);
  }
  const c = config.config ?? {};
  return {
    name: ref,
    manifest: manifestDesc,
    config: manifest.config,
    imageConfig: {
      env: c.Env ?? [],
      workingDir: c.WorkingDir ?? "",
      user: c.User ?? "",
      entrypoint: c.Entrypoint ?? [],
      cmd: c.Cmd ?? [],
    },
    layers: manifest.layers,
    diffIds,
    chainIds: chainIds(diffIds),
  };
}

/**
 * Makes sure every layer's snapshot exists (committed under its chain ID), applying the missing ones. `client`
 * should carry a lease so that nothing half-made is collected meanwhile. Returns the top chain ID ("" for an
 * image without layers).
 */
export async function unpackImage(client: ContainerdClient, image: ResolvedImage, snapshotter = DEFAULT_SNAPSHOTTER): Promise<string> {
  let parent = "";
  for (const [i, chain] of image.chainIds.entries()) {
    const exists = await client.snapshots.stat({ snapshotter, key: chain }).then(
      () => true,
      (err: unknown) => {
        if (err instanceof NotFoundError) return false;
        throw err;
      },
    );
    if (!exists) {
      const key = `extract-${randomBytes(6).toString("hex")} ${chain}`;
      const mounts = await client.snapshots.prepare({ snapshotter, key, ...(parent ? { parent } : {}) });
      try {
        await client.diff.apply(image.layers[i]!, mounts);
        await client.snapshots.commit({ snapshotter, name: chain, key });
      } catch (err) {
        await client.snapshots.remove({ snapshotter, key }).catch(() => {});
        // Another unpack of the same image got there first: its snapshot is as good as ours.
        if (!(err instanceof AlreadyExistsError)) throw err;
      }
    }
    parent = chain;
  }
  if (parent) {
    await client.content.setLabels(image.config.digest, { [`containerd.io/gc.ref.snapshot.${snapshotter}`]: parent });
  }
  return parent;
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
