import type { ContainerdClient } from "../containerd/client.js";
import { InvalidArgumentError } from "../errors.js";
import { parseReference } from "../registry/reference.js";
import { findImageRecord, imageNotFound, type ResolvedImage, resolveRecord } from "./image.js";
import { hostPlatform, parsePlatform } from "./platform.js";
import { type PullOptions, type PullPolicy, pullImage } from "./pull.js";

export interface ResolveImageOptions extends PullOptions {
  /**
   * When to pull from the registry: `"never"` (the default: only containerd's store is asked, no network),
   * `"missing"` (pull when the store has no image of that name, as docker's `--pull missing`), `"always"`.
   */
  pull?: PullPolicy;
}

const POLICIES: readonly PullPolicy[] = ["missing", "always", "never"];

/**
 * The store's image named `ref`, for this host's platform (or `platform`). The name is looked up as given, then
 * as docker normalizes it (`alpine` → `docker.io/library/alpine:latest`), so images `ctr` or `ctrexec pull` stored
 * under their full names are found by their short ones.
 */
export async function resolveImage(client: ContainerdClient, ref: string, options: ResolveImageOptions = {}): Promise<ResolvedImage> {
  const policy = options.pull ?? "never";
  if (!POLICIES.includes(policy)) {
    throw new InvalidArgumentError(`pull must be one of ${POLICIES.join(", ")} (got ${JSON.stringify(policy)})`, { field: "pull" });
  }
  const platform = options.platform !== undefined ? parsePlatform(options.platform) : hostPlatform();
  if (policy === "always") return pullImage(client, ref, options);
  const normalized = normalizedName(ref);
  const record = (await findImageRecord(client, ref)) ?? (normalized !== undefined ? await findImageRecord(client, normalized) : undefined);
  // Only a missing record is a reason to pull: an image without this platform is not pulled again.
  if (record) return resolveRecord(client, record, platform);
  if (policy === "missing") return pullImage(client, ref, options);
  throw imageNotFound(client, ref);
}

/** The normalized name, when `ref` parses as a docker reference and differs from it. */
function normalizedName(ref: string): string | undefined {
  try {
    const name = parseReference(ref).name;
    return name === ref ? undefined : name;
  } catch {
    return undefined;
  }
}
