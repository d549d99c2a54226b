import type { ContainerdClient } from "../containerd/client.js";
import { InvalidArgumentError, NotFoundError } from "../errors.js";
import { parseReference } from "../registry/reference.js";
import { lookupImage, type ResolvedImage } from "./image.js";
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
  try {
    return await lookupLocal(client, ref, platform);
  } catch (err) {
    if (policy === "missing" && err instanceof NotFoundError && (await absent(client, ref))) return pullImage(client, ref, options);
    throw err;
  }
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

async function lookupLocal(client: ContainerdClient, ref: string, platform: ReturnType<typeof hostPlatform>): Promise<ResolvedImage> {
  const normalized = normalizedName(ref);
  try {
    return await lookupImage(client, ref, platform);
  } catch (err) {
    if (!(err instanceof NotFoundError) || normalized === undefined) throw err;
    return lookupImage(client, normalized, platform).catch((again: unknown) => {
      throw again instanceof NotFoundError ? err : again;
    });
  }
}

/** Whether the store has no record under either name: a NotFoundError for a missing platform is not a reason to pull. */
async function absent(client: ContainerdClient, ref: string): Promise<boolean> {
  for (const name of [ref, normalizedName(ref)]) {
    if (name === undefined) continue;
    const found = await client.images.get(name).then(
      () => true,
      (err: unknown) => {
        if (err instanceof NotFoundError) return false;
        throw err;
      },
    );
    if (found) return false;
  }
  return true;
}
