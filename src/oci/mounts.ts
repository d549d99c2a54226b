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

/** The flags of the mount a bind's source is on that a user namespace cannot clear ("locked" flags). */
export interface SourceMountFlags {
  readonly: boolean;
  nosuid: boolean;
  nodev: boolean;
  noexec: boolean;
}

/** Is this a bind mount: type `bind`, or a `bind`/`rbind` option (as runc decides). */
export function isBindMount(m: Mount): boolean {
  return m.type === "bind" || (m.options ?? []).some((o) => o === "bind" || o === "rbind");
}

/**
 * BuildKit's locked-flag fix-up (reference §9.2) for a container in a user namespace: to each bind mount, the
 * flags its source's mount carries that the options do not name yet are appended (`ro`, `nosuid`, `nodev`,
 * `noexec`), as BuildKit appends and dedups. A bind made in a user namespace inherits those flags locked, and
 * runc's remount without them fails with EPERM (probe caveat 3: `flags: 0x5021: operation not permitted`).
 *
 * `ro` is appended even after an explicit `rw`, as BuildKit does (runc applies options in order, so the later
 * `ro` wins): the kernel keeps a read-only source's bind read-only in a user namespace whatever the options
 * say, and a remount asking for rw would only fail; without a user namespace the same bind stays read-only
 * too (a bind copies its source's flags and `rw` alone triggers no remount).
 * The atime flags BuildKit also copies (noatime, relatime, nodiratime) are left out on purpose: since Linux
 * 3.17 a remount that names no atime flag keeps the mount's own (mount(2)), which is what runc's remount
 * does, and one that names a different one fails with or without the copy.
 *
 * `flagsOf` gives the flags of the mount a source path is on (the executor's is statvfs-backed), or undefined
 * when it cannot tell: that mount is left as it is. Returns a new list; mounts it changes are copies, so the
 * input is never modified.
 */
export function withLockedFlags(mounts: Mount[], flagsOf: (source: string) => SourceMountFlags | undefined): Mount[] {
  return mounts.map((m) => {
    if (!isBindMount(m) || m.source === undefined) return m;
    const flags = flagsOf(m.source);
    if (!flags) return m;
    const options = [...(m.options ?? [])];
    const add = (on: boolean, option: string) => {
      if (on && !options.includes(option)) options.push(option);
    };
    add(flags.readonly, "ro");
    add(flags.nosuid, "nosuid");
    add(flags.nodev, "nodev");
    add(flags.noexec, "noexec");
    return options.length === (m.options ?? []).length ? m : { ...m, options };
  });
}
