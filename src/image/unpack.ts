import { randomBytes } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import type { Descriptor, Mount } from "../containerd/types.js";
import { AlreadyExistsError, DataLossError, NotFoundError } from "../errors.js";
import { DEFAULT_SNAPSHOTTER, type ResolvedImage } from "./image.js";

/**
 * Unpacking as containerd's own unpacker does it, so that images ctrexec unpacks and images `ctr` unpacks are
 * interchangeable: each layer is applied by the Diff service onto a snapshot of its parent, prepared under the
 * key `extract-<unique> <chainID>` and committed under its chain ID, both labelled `containerd.io/snapshot.ref`;
 * the applied (uncompressed) digest must equal the config's diff ID, and is then recorded on the layer blob as
 * `containerd.io/uncompressed`; the top chain ID is recorded on the config blob
 * (`containerd.io/gc.ref.snapshot.<snapshotter>`) so that GC keeps the snapshots as long as the image.
 */

/** Cleanup of a half-made snapshot runs on its own bound, not on the caller's signal. */
const CLEANUP_TIMEOUT_MS = 10_000;

/** Whether the snapshot `name` exists (committed or not). */
export async function snapshotExists(client: ContainerdClient, snapshotter: string, name: string, signal?: AbortSignal): Promise<boolean> {
  return client.snapshots.stat({ snapshotter, key: name }, { signal }).then(
    () => true,
    (err: unknown) => {
      if (err instanceof NotFoundError) return false;
      throw err;
    },
  );
}

/**
 * Applies `layer` (its blob must be in the content store) on `parent` and commits it as `chainId`. Another unpack
 * of the same chain that commits first wins, and its snapshot is as good as ours.
 */
export async function unpackLayer(
  client: ContainerdClient,
  layer: Descriptor,
  diffId: string,
  chainId: string,
  parent: string,
  options: { snapshotter?: string; signal?: AbortSignal } = {},
): Promise<void> {
  const snapshotter = options.snapshotter ?? DEFAULT_SNAPSHOTTER;
  const labels = { "containerd.io/snapshot.ref": chainId };
  const key = `extract-${Date.now() % 1e9}-${randomBytes(6).toString("base64url")} ${chainId}`;
  let mounts: Mount[];
  try {
    mounts = await client.snapshots.prepare({ snapshotter, key, labels, ...(parent ? { parent } : {}) }, { signal: options.signal });
  } catch (err) {
    // With the snapshot.ref label, containerd refuses to prepare a chain that was committed meanwhile (by a
    // concurrent unpack of the same image): that chain is as good as ours.
    if (err instanceof AlreadyExistsError && (await snapshotExists(client, snapshotter, chainId, options.signal))) return;
    throw err;
  }
  try {
    // No deadline: a large layer takes as long as it takes; the caller's signal cancels it.
    const applied = await client.diff.apply(layer, mounts, { signal: options.signal, timeoutMs: 0 });
    if (applied.digest !== diffId) {
      throw new DataLossError(
        `layer ${layer.digest} unpacks to ${applied.digest}, but the image config says ${diffId}: the image is corrupt; pull it again or ask its publisher`,
      );
    }
    await client.snapshots.commit({ snapshotter, name: chainId, key, labels }, { signal: options.signal });
  } catch (err) {
    await client.snapshots.remove({ snapshotter, key }, { timeoutMs: CLEANUP_TIMEOUT_MS }).catch(() => {});
    if (err instanceof AlreadyExistsError) return;
    throw err;
  }
  await client.content.setLabels(layer.digest, { "containerd.io/uncompressed": diffId }, { signal: options.signal });
}

/** Records the unpacked root on the config blob, which makes GC keep the snapshots as long as the image. */
export async function markUnpacked(client: ContainerdClient, image: ResolvedImage, snapshotter: string, signal?: AbortSignal): Promise<void> {
  const top = image.chainIds[image.chainIds.length - 1];
  if (top) await client.content.setLabels(image.config.digest, { [`containerd.io/gc.ref.snapshot.${snapshotter}`]: top }, { signal });
}

/**
 * Makes sure every layer's snapshot exists, applying the missing ones. `client` should carry a lease so that
 * nothing half-made is collected meanwhile. Returns the top chain ID ("" for an image without layers).
 */
export async function unpackImage(client: ContainerdClient, image: ResolvedImage, snapshotter = DEFAULT_SNAPSHOTTER): Promise<string> {
  const top = image.chainIds[image.chainIds.length - 1] ?? "";
  // The top chain's snapshot stands on all the others: when it exists (every run of an unpacked image, on the run
  // path), one Stat answers for the whole chain.
  if (top && !(await snapshotExists(client, snapshotter, top))) {
    let parent = "";
    for (const [i, chain] of image.chainIds.entries()) {
      if (!(await snapshotExists(client, snapshotter, chain))) {
        await unpackLayer(client, image.layers[i]!, image.diffIds[i]!, chain, parent, { snapshotter });
      }
      parent = chain;
    }
  }
  await markUnpacked(client, image, snapshotter);
  return top;
}
