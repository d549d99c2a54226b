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

const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: "amd64" },
  "x86-64": { architecture: "amd64" },
  amd64: { architecture: "amd64" },
  i386: { architecture: "386" },
  i686: { architecture: "386" },
  aarch64: { architecture: "arm64" },
  armhf: { architecture: "arm", variant: "v7" },
  armel: { architecture: "arm", variant: "v6" },
};

/** Normalizes names and variants as containerd's platforms.Normalize does; keeps unknown values as given. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  let architecture = p.architecture.toLowerCase();
  let variant = p.variant?.toLowerCase() || undefined;
  const alias = ARCH_ALIASES[architecture];
  if (alias) {
    architecture = alias.architecture;
    variant ??= alias.variant;
  }
  if (architecture === "arm64" && (variant === "8" || variant === "v8")) variant = undefined;
  if (architecture === "arm" && variant === undefined) variant = "v7";
  if (architecture === "arm" && variant && /^[5-8]$/.test(variant)) variant = `v${variant}`;
  if (architecture === "amd64" && variant === "v1") variant = undefined;
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
 * How well `have` serves a host that wants `want`: 0 for an exact match, a larger number for a compatible older
 * variant (arm/v7 runs v6 and v5 code; an image without variant runs anywhere its architecture does), undefined
 * for no match. containerd's default matcher orders an index's manifests the same way.
 */
export function platformRank(want: Platform, have: Platform | undefined): number | undefined {
  if (!have?.os || !have.architecture) return undefined;
  const w = normalizePlatform(want);
  const h = normalizePlatform(have);
  if (w.os !== h.os || w.architecture !== h.architecture) return undefined;
  if (w.variant === h.variant) return 0;
  if (w.architecture === "arm" && w.variant && h.variant) {
    const wv = Number(w.variant.slice(1));
    const hv = Number(h.variant.slice(1));
    return hv < wv ? wv - hv : undefined;
  }
  // An unnamed variant: containerd's matcher treats it as the architecture's baseline.
  if (h.variant === undefined) return 10;
  return undefined;
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
