import { MediaType } from "../registry/types.js";

/**
 * The media types an image pull and an image lookup accept. containerd 1.6 and the registries speak two dialects:
 * OCI's and Docker's schema 2 (the registry client refuses Docker's retired schema 1 by name when it resolves).
 */

export const INDEX_TYPES: ReadonlySet<string> = new Set([MediaType.ociIndex, MediaType.dockerList]);

export const MANIFEST_TYPES: ReadonlySet<string> = new Set([MediaType.ociManifest, MediaType.dockerManifest]);

const CONFIG_TYPES: ReadonlySet<string> = new Set(["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"]);

/** Layers containerd's differ applies: it detects gzip and zstd by their magic bytes, so all of these work. */
const LAYER_TYPES: ReadonlySet<string> = new Set([
  "application/vnd.oci.image.layer.v1.tar",
  "application/vnd.oci.image.layer.v1.tar+gzip",
  "application/vnd.oci.image.layer.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.diff.tar.gzip",
  "application/vnd.docker.image.rootfs.diff.tar",
]);

/** Non-distributable ("foreign") layers: registries may refuse to serve them; their descriptor lists URLs. */
const FOREIGN_LAYER_TYPES: ReadonlySet<string> = new Set([
  "application/vnd.oci.image.layer.nondistributable.v1.tar",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
  "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
  "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
]);

export function isLayerType(mediaType: string): boolean {
  return LAYER_TYPES.has(mediaType) || FOREIGN_LAYER_TYPES.has(mediaType);
}

export function isForeignLayer(mediaType: string): boolean {
  return FOREIGN_LAYER_TYPES.has(mediaType);
}

/** The suffix of the gc.ref label containerd's client puts on a parent for this child (images.ChildGCLabels). */
function childLabelKind(mediaType: string): "config" | "m" | "l" | "" {
  if (CONFIG_TYPES.has(mediaType)) return "config";
  if (MANIFEST_TYPES.has(mediaType)) return "m";
  if (isLayerType(mediaType)) return "l";
  return "";
}

/**
 * The `containerd.io/gc.ref.content.*` labels a parent gets for its children, numbered as containerd numbers
 * them: `config` for the config, `m.<i>` for manifests, `l.<i>` for layers, `<i>` for anything else, each kind
 * counted on its own. They let containerd's GC keep the children as long as the parent is kept.
 */
export function childGcLabels(children: readonly { mediaType: string; digest: string }[]): Record<string, string> {
  const labels: Record<string, string> = {};
  const seen = new Map<string, number>();
  for (const child of children) {
    const kind = childLabelKind(child.mediaType);
    const n = seen.get(kind) ?? 0;
    seen.set(kind, n + 1);
    const key =
      kind === "config" && n === 0
        ? "containerd.io/gc.ref.content.config"
        : kind === "" || kind === "config"
          ? `containerd.io/gc.ref.content.${kind ? `${kind}${n}` : n}`
          : `containerd.io/gc.ref.content.${kind}.${n}`;
    labels[key] = child.digest;
  }
  return labels;
}
