import { InvalidArgumentError } from "../errors.js";
import type { Mount } from "./types.js";

/**
 * A tmpfs mount as BuildKit makes one: `nosuid`, `ro` when read-only, `size=<bytes>` when sized; no
 * nodev/noexec/mode, so the kernel's 1777 applies.
 */
export function tmpfsMount(destination: string, options: { size?: number | undefined; readonly?: boolean | undefined } = {}): Mount {
  const opts = ["nosuid"];
  if (options.readonly) opts.push("ro");
  if (options.size !== undefined) {
    if (!Number.isSafeInteger(options.size) || options.size <= 0) {
      throw new InvalidArgumentError(`tmpfs size ${options.size} for ${destination} is not a positive number of bytes`, {
        field: "mounts",
      });
    }
    opts.push(`size=${options.size}`);
  }
  return { destination, type: "tmpfs", source: "tmpfs", options: opts };
}

/** A bind mount of a host path; `rbind` so mounts below the source come along. */
export function bindMount(destination: string, source: string, options: { readonly?: boolean | undefined } = {}): Mount {
  return { destination, type: "bind", source, options: options.readonly ? ["rbind", "ro"] : ["rbind"] };
}
