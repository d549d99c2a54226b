import { statSync } from "node:fs";
import { isAbsolute } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import type { Mountable, MountRef } from "./types.js";

const noRelease = async (): Promise<void> => {};

/** A host directory (or file), bind-mounted; read-only when the mount asks for it. */
export function bindMountable(hostPath: string): Mountable {
  if (!isAbsolute(hostPath)) {
    throw new InvalidArgumentError(`bind source ${JSON.stringify(hostPath)} must be an absolute path`, { field: "mounts" });
  }
  return {
    async mount(readonly: boolean): Promise<MountRef> {
      try {
        statSync(hostPath);
      } catch {
        throw new InvalidArgumentError(`bind source ${hostPath} does not exist`, { field: "mounts" });
      }
      return { mounts: [{ type: "bind", source: hostPath, options: readonly ? ["rbind", "ro"] : ["rbind"] }], release: noRelease };
    },
  };
}

/** A fresh tmpfs; `size` in bytes. */
export function tmpfsMountable(options: { size?: number } = {}): Mountable {
  if (options.size !== undefined && (!Number.isSafeInteger(options.size) || options.size <= 0)) {
    throw new InvalidArgumentError(`tmpfs size ${options.size} is not a positive number of bytes`, { field: "mounts" });
  }
  return {
    async mount(readonly: boolean): Promise<MountRef> {
      const opts = ["nosuid"];
      if (readonly) opts.push("ro");
      if (options.size !== undefined) opts.push(`size=${options.size}`);
      return { mounts: [{ type: "tmpfs", source: "tmpfs", options: opts }], release: noRelease };
    },
  };
}
