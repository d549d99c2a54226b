import { InvalidArgumentError } from "../errors.js";

/**
 * Platforms as containerd's `platforms` package reads and matches them: `os/arch[/variant]`, architectures
 * under their Go names (x86_64 → amd64, aarch64 → arm64), arm64's implied variant v8 and arm's v7, so that
 * ctrexec picks the same manifest from an index as `ctr` and nerdctl do.
 */

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** containerd's platforms.Normalize: lower case, Go's architecture names, and each architecture's default variant. */
export function normalizePlatform(p: Platform): Platform {
  let os = (p.os || "linux").toLowerCase();
  if (os === "macos") os = "darwin";
  let architecture = p.architecture.toLowerCase();
  let variant = (p.variant ?? "").toLowerCase();
  switch (architecture) {
    case "i386":
      architecture = "386";
      variant = "";
      break;
    case "x86_64":
    case "x86-64":
    case "amd64":
      architecture = "amd64";
      if (variant === "v1") variant = "";
      break;
    case "aarch64":
    case "arm64":
      architecture = "arm64";
      if (variant === "8" || variant === "v8") variant = "";
      break;
    case "armhf":
      architecture = "arm";
      variant = "v7";
      break;
    case "armel":
      architecture = "arm";
      variant = "v6";
      break;
    case "arm":
      if (variant === "" || variant === "7") variant = "v7";
      else if (variant === "5" || variant === "6" || variant === "8") variant = `v${variant}`;
      break;
  }
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** `os/arch[/variant]` (or `arch` alone, read as linux/arch) from the user: an InvalidArgumentError when malformed. */
export function parsePlatform(spec: string, field = "platform"): Platform {
  const parts = spec.split("/");
  const ok = /^[a-z0-9_.-]+$/i;
  if (parts.length > 3 || parts.some((s) => !ok.test(s))) {
    throw new InvalidArgumentError(`platform "${spec}" is not OS/ARCH[/VARIANT] (for example linux/arm64/v8)`, { field });
  }
  const [a, b, c] = parts as [string, string?, string?];
  if (b === undefined) return normalizePlatform({ os: "linux", architecture: a });
  return normalizePlatform({ os: a, architecture: b, ...(c ? { variant: c } : {}) });
}

/** This host's platform, with arm's variant from how Node was built. */
export function hostPlatform(): Platform {
  const arch: Record<string, string> = {
    x64: "amd64",
    arm64: "arm64",
    arm: "arm",
    ia32: "386",
    ppc64: "ppc64le",
    s390x: "s390x",
    riscv64: "riscv64",
  };
  const architecture = arch[process.arch] ?? process.arch;
  const armVersion = (process.config.variables as { arm_version?: string }).arm_version;
  return normalizePlatform({ os: "linux", architecture, ...(architecture === "arm" && armVersion ? { variant: `v${armVersion}` } : {}) });
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

/**
 * What a host of platform `want` runs, best first: containerd's platformVector. amd64/vN also runs vN-1…v1 and
 * 386; arm/vN runs vN-1…v5; arm64 runs arm/v8…v5.
 */
function platformVector(want: Platform): Platform[] {
  const p = normalizePlatform(want);
  const out: Platform[] = [p];
  const version = (v: string | undefined) => Number((v ?? "").replace(/^v/, ""));
  if (p.architecture === "amd64") {
    const n = version(p.variant);
    if (Number.isInteger(n) && n > 1)
      for (let v = n - 1; v >= 1; v--) out.push(normalizePlatform({ os: p.os, architecture: "amd64", variant: `v${v}` }));
    out.push({ os: p.os, architecture: "386" });
  } else if (p.architecture === "arm") {
    const n = version(p.variant);
    if (Number.isInteger(n) && n > 5) for (let v = n - 1; v >= 5; v--) out.push({ os: p.os, architecture: "arm", variant: `v${v}` });
  } else if (p.architecture === "arm64") {
    out.push(...platformVector({ os: p.os, architecture: "arm", variant: want.variant || "v8" }));
  }
  return out;
}

/**
 * How well `have` serves a host that wants `want`: its place in `want`'s platform vector (0 for an exact match),
 * undefined when the host cannot run it. An entry without a platform ranks last, as containerd's
 * FilterPlatforms keeps it and LimitManifests sorts it after every match.
 */
export function platformRank(want: Platform, have: Platform | undefined): number | undefined {
  const vector = platformVector(want);
  if (!have) return vector.length;
  if (!have.architecture) return undefined;
  const h = normalizePlatform(have);
  const i = vector.findIndex((v) => v.os === h.os && v.architecture === h.architecture && (v.variant ?? "") === (h.variant ?? ""));
  return i < 0 ? undefined : i;
}

/** The best entry of an index for `want` (ties go to the first listed), or undefined. */
export function choosePlatform<T extends { platform?: Platform }>(entries: readonly T[], want: Platform): T | undefined {
  let best: T | undefined;
  let bestRank = Number.POSITIVE_INFINITY;
  for (const e of entries) {
    const rank = platformRank(want, e.platform);
    if (rank !== undefined && rank < bestRank) {
      best = e;
      bestRank = rank;
    }
  }
  return best;
}
