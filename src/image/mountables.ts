import { randomBytes } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import type { Mount } from "../containerd/types.js";
import { AlreadyExistsError } from "../errors.js";
import type { Mountable, MountRef } from "../executor/types.js";
import { DEFAULT_SNAPSHOTTER, type ResolvedImage } from "./image.js";
import { createLease, deleteLease } from "./lease.js";
import { type ResolveImageOptions, resolveImage } from "./resolve.js";
import { unpackImage } from "./unpack.js";

export interface SnapshotMountOptions {
  snapshotter?: string;
  /**
   * Commit the run's changes as a snapshot of this name (a parent for later runs) instead of dropping them:
   * only when the run succeeded (BuildKit keeps only successful steps), unless `commitOnFailure`.
   */
  commit?: string;
  /** With `commit`: commit a failed run's changes too (to look at what a failing step left, for debugging). */
  commitOnFailure?: boolean;
}

async function withLease<T>(client: ContainerdClient, f: (leased: ContainerdClient, lease: string) => Promise<T>): Promise<T> {
  const lease = await createLease(client, "");
  try {
    return await f(client.withLease(lease), lease);
  } catch (err) {
    await deleteLease(client, lease).catch(() => {});
    throw err;
  }
}

/**
 * An active snapshot on `parent` for one run, under a lease; released by removing it, or, after a successful
 * run (or with `commitOnFailure`), by committing it as `commit` (marked as a GC root, so it outlives the lease).
 */
async function activeSnapshot(
  client: ContainerdClient,
  parentOf: (leased: ContainerdClient) => Promise<string>,
  readonly: boolean,
  options: SnapshotMountOptions,
): Promise<MountRef> {
  const snapshotter = options.snapshotter ?? DEFAULT_SNAPSHOTTER;
  return withLease(client, async (leased, lease) => {
    const parent = await parentOf(leased);
    const key = `ctrexec-active-${randomBytes(8).toString("hex")}`;
    const req = { snapshotter, key, ...(parent ? { parent } : {}) };
    const mounts: Mount[] = readonly && !options.commit ? await leased.snapshots.view(req) : await leased.snapshots.prepare(req);
    let released = false;
    return {
      mounts,
      keepsResult: options.commit !== undefined,
      exclusive: true,
      release: async (outcome = { succeeded: true }) => {
        if (released) return;
        released = true;
        try {
          if (options.commit && (outcome.succeeded || options.commitOnFailure)) {
            try {
              await client.snapshots.commit({
                snapshotter,
                name: options.commit,
                key,
                labels: { "containerd.io/gc.root": new Date().toISOString() },
              });
            } catch (err) {
              await client.snapshots.remove({ snapshotter, key }).catch(() => {});
              if (err instanceof AlreadyExistsError) {
                throw new AlreadyExistsError(`snapshot ${options.commit} already exists: the run's changes were not committed`, { cause: err });
              }
              throw err;
            }
          } else await client.snapshots.remove({ snapshotter, key });
        } finally {
          await client.leases.delete(lease).catch(() => {});
        }
      },
    };
  });
}

/** What imageMountable takes: how the run's snapshot is made, and when and how the image is pulled. */
export interface ImageMountOptions extends SnapshotMountOptions {
  /** Default "never": the image must be in containerd's store. "missing" pulls it when it is not. */
  pull?: ResolveImageOptions["pull"];
  /** Registry settings for a pull (credentials, insecure registries, platform...). */
  pullOptions?: Omit<ResolveImageOptions, "pull" | "snapshotter">;
}

/** A root (or mount) from an image in containerd's store (pulled first when `pull` says so): unpacked if needed, a fresh snapshot per run. */
export function imageMountable(client: ContainerdClient, image: string | ResolvedImage, options: ImageMountOptions = {}): Mountable {
  return {
    mount: (readonly) =>
      activeSnapshot(
        client,
        async (leased) =>
          unpackImage(
            leased,
            typeof image === "string"
              ? await resolveImage(client, image, {
                  ...options.pullOptions,
                  ...(options.pull ? { pull: options.pull } : {}),
                  ...(options.snapshotter ? { snapshotter: options.snapshotter } : {}),
                })
              : image,
            options.snapshotter,
          ),
        readonly,
        options,
      ),
  };
}

/** A root on a committed snapshot (for example an earlier run's `commit`). */
export function snapshotMountable(client: ContainerdClient, parent: string, options: SnapshotMountOptions = {}): Mountable {
  return { mount: (readonly) => activeSnapshot(client, async () => parent, readonly, options) };
}
