import { InvalidArgumentError } from "../errors.js";
import { validateHostname } from "./hosts.js";
import type { Mount } from "./types.js";

/** Checks of a spec's inputs, shared by generateSpec and execProcess: each throws InvalidArgumentError naming the field. */

/** The kernel's limit on a UTS hostname (HOST_NAME_MAX): runc's sethostname fails beyond it, after the container exists. */
export const HOSTNAME_MAX_BYTES = 64;

/** A container's hostname: what /etc/hosts may carry (hosts.ts), and at most 64 bytes. */
export function validateContainerHostname(hostname: string): void {
  validateHostname(hostname);
  const bytes = Buffer.byteLength(hostname);
  if (bytes > HOSTNAME_MAX_BYTES) {
    throw new InvalidArgumentError(
      `hostname ${JSON.stringify(hostname.slice(0, 20))}… is ${bytes} bytes: the kernel takes at most ${HOSTNAME_MAX_BYTES}; choose a shorter one`,
      { field: "hostname" },
    );
  }
}

/** A terminal size: whole rows and columns from 1 to 65535 (the kernel's winsize holds unsigned shorts). */
export function validateConsoleSize(size: { rows: number; cols: number } | undefined, field = "consoleSize"): void {
  if (size === undefined) return;
  for (const k of ["rows", "cols"] as const) {
    const v = size[k];
    if (!Number.isInteger(v) || v < 1 || v > 0xffff) {
      throw new InvalidArgumentError(`${field}.${k} must be a whole number from 1 to 65535, not ${JSON.stringify(v)}`, { field });
    }
  }
}

/**
 * A parent cgroup: absolute or relative (runc takes it under its own cgroup root either way), or systemd's
 * `slice:prefix:` form, but never climbing out with `..` (today's join would clamp it, silently), and no NUL.
 */
export function validateCgroupParent(parent: string | undefined, field = "cgroupParent"): void {
  if (parent === undefined || parent === "") return;
  if (parent.includes("\0")) throw new InvalidArgumentError(`${field} must not contain NUL bytes`, { field });
  if (parent.split(/[/:]/).includes("..")) {
    throw new InvalidArgumentError(`${field} ${JSON.stringify(parent)} must not contain ".." components: name the cgroup itself`, { field });
  }
}

/**
 * A mount's fields reach runc or mount(2) as C strings, where a NUL would cut them short: refused. `dest` names
 * the mount (containerd-style mounts from a Mountable have no destination of their own).
 */
export function validateMountStrings(dest: string, mounts: readonly { type?: string; source?: string; options?: readonly string[] }[]): void {
  for (const m of mounts) {
    for (const v of [m.type ?? "", m.source ?? "", ...(m.options ?? [])]) {
      if (v.includes("\0")) {
        throw new InvalidArgumentError(`mount ${JSON.stringify(dest)}: its type, source and options must not contain NUL bytes`, { field: "mounts" });
      }
    }
  }
}

export function validateMounts(mounts: readonly Mount[]): void {
  for (const m of mounts) {
    if (m.destination.includes("\0")) {
      throw new InvalidArgumentError(`mount destination ${JSON.stringify(m.destination)} must not contain NUL bytes`, { field: "mounts" });
    }
    validateMountStrings(m.destination, [m]);
    if (!m.destination.startsWith("/")) {
      throw new InvalidArgumentError(`mount destination ${JSON.stringify(m.destination)} must be an absolute path`, {
        field: "mounts",
      });
    }
    if (m.destination.split("/").includes("..")) {
      throw new InvalidArgumentError(`mount destination ${JSON.stringify(m.destination)} must not contain ".."`, {
        field: "mounts",
      });
    }
  }
}

export function validateArgs(args: readonly string[], env: readonly string[]): void {
  if (args.length === 0) throw new InvalidArgumentError("no command given: args is empty", { field: "args" });
  for (const a of [...args, ...env]) {
    if (a.includes("\0")) throw new InvalidArgumentError("args and env must not contain NUL bytes", { field: "args" });
  }
}

/** A working directory: absolute, and no NUL (runc and the cwd creation take it as a C string). */
export function validateCwd(cwd: string): void {
  if (!cwd.startsWith("/")) {
    throw new InvalidArgumentError(`working directory ${JSON.stringify(cwd)} must be an absolute path`, { field: "cwd" });
  }
  if (cwd.includes("\0")) throw new InvalidArgumentError("the working directory must not contain NUL bytes", { field: "cwd" });
}
