import { InvalidArgumentError } from "../errors.js";
import type { LinuxIdMapping } from "./types.js";

/** One line of a uid or gid map: `size` ids from `containerId` in the container are `hostId`.. on the host. */
export interface IdMapEntry {
  containerId: number;
  hostId: number;
  size: number;
}

/** A user namespace's uid and gid maps. */
export interface IdMapping {
  uidMap: IdMapEntry[];
  gidMap: IdMapEntry[];
}

/** The kernel's limit on the lines of one uid_map or gid_map (UID_GID_MAP_MAX_EXTENTS). */
export const MAX_MAP_ENTRIES = 340;

/**
 * One past the last id a map may cover: ids are u32 and (uid_t)-1 means "no id", so the kernel refuses a line
 * whose first id plus count reaches 2^32 (map_write's overflow check), on either side.
 */
export const ID_LIMIT = 0xffffffff;

/** The size of an "auto" range, and of rangeMapping's by default: the 16-bit ids images and distributions use. */
export const RANGE_SIZE = 65536;

function fail(field: string, message: string): never {
  throw new InvalidArgumentError(`${field}: ${message}`, { field });
}

function checkEntries(value: unknown, field: string, at: string): IdMapEntry[] {
  if (!Array.isArray(value) || value.length === 0) fail(field, `${at} must be a non-empty list of { containerId, hostId, size }`);
  if (value.length > MAX_MAP_ENTRIES) fail(field, `${at} has ${value.length} entries; the kernel takes at most ${MAX_MAP_ENTRIES}`);
  const out: IdMapEntry[] = [];
  value.forEach((e: unknown, i) => {
    const where = `${at}[${i}]`;
    if (typeof e !== "object" || e === null) fail(field, `${where} must be { containerId, hostId, size }`);
    const r = e as Record<string, unknown>;
    for (const k of ["containerId", "hostId", "size"] as const) {
      const v = r[k];
      if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 0)
        fail(field, `${where}.${k} must be a whole number ≥ 0, not ${JSON.stringify(v)}`);
    }
    const entry = { containerId: r["containerId"] as number, hostId: r["hostId"] as number, size: r["size"] as number };
    if (entry.size < 1) fail(field, `${where}.size must be at least 1`);
    for (const k of ["containerId", "hostId"] as const) {
      if (entry[k] + entry.size > ID_LIMIT) {
        fail(
          field,
          `${where}: ${k} ${entry[k]} + size ${entry.size} passes ${ID_LIMIT} (the last id is ${ID_LIMIT - 1}; ${ID_LIMIT} is the invalid id -1)`,
        );
      }
    }
    out.push(entry);
  });
  // The kernel refuses a map whose lines overlap on either side (mappings_overlap).
  for (const side of ["containerId", "hostId"] as const) {
    const sorted = out.map((e, i) => ({ e, i })).sort((a, b) => a.e[side] - b.e[side]);
    for (let k = 1; k < sorted.length; k++) {
      const prev = sorted[k - 1]!;
      const cur = sorted[k]!;
      if (prev.e[side] + prev.e.size > cur.e[side]) {
        const what = side === "containerId" ? "container" : "host";
        fail(
          field,
          `${at}[${prev.i}] and ${at}[${cur.i}] overlap on the ${what} side (${describeRange(prev.e[side], prev.e.size)} and ${describeRange(cur.e[side], cur.e.size)})`,
        );
      }
    }
  }
  return out;
}

function describeRange(start: number, size: number): string {
  return size === 1 ? String(start) : `${start}-${start + size - 1}`;
}

/**
 * Checks a user namespace's maps as the kernel and runc would take them, before anything is created: both maps
 * non-empty, at most 340 lines, whole ids within u32 short of -1, no overlap on either side, and container id 0
 * mapped in both (the container's root must exist: runc sets up the namespace as its root). Returns a copy;
 * throws InvalidArgumentError naming `field` otherwise.
 */
export function validateIdMapping(m: IdMapping, field: string): IdMapping {
  if (typeof m !== "object" || m === null) fail(field, "must be { uidMap, gidMap }");
  const uidMap = checkEntries(m.uidMap, field, "uidMap");
  const gidMap = checkEntries(m.gidMap, field, "gidMap");
  if (mapToHost(uidMap, 0) === undefined) fail(field, "uidMap must map container uid 0: the container's root user must exist in its user namespace");
  if (mapToHost(gidMap, 0) === undefined) fail(field, "gidMap must map container gid 0: the container's root group must exist in its user namespace");
  return { uidMap, gidMap };
}

const FLAG_RE = /^(\d+):(\d+):(\d+)$/;

/**
 * One `--uidmap`/`--gidmap` value in podman's form `CONTAINER:HOST:SIZE` (decimal). podman takes several maps
 * by repeating the flag, so this parses exactly one; podman's newer extensions (`+`, `@`, `u`/`g`) are not
 * supported and say so.
 */
export function parseIdMapFlag(s: string, field: string): IdMapEntry {
  const m = FLAG_RE.exec(s.trim());
  if (!m) {
    const hint = /[,+@ug]/.test(s)
      ? " (one CONTAINER:HOST:SIZE per flag: repeat the flag for more; podman's +, @, u and g forms are not supported)"
      : "";
    throw new InvalidArgumentError(`${field} ${JSON.stringify(s)} is not CONTAINER:HOST:SIZE, e.g. 0:100000:65536${hint}`, { field });
  }
  const [containerId, hostId, size] = [Number(m[1]), Number(m[2]), Number(m[3])];
  for (const [name, v] of [
    ["CONTAINER", containerId],
    ["HOST", hostId],
  ] as const) {
    if (!Number.isSafeInteger(v) || v + size > ID_LIMIT) {
      throw new InvalidArgumentError(`${field} ${JSON.stringify(s)}: ${name}+SIZE must stay below ${ID_LIMIT}`, { field });
    }
  }
  if (!(size >= 1)) throw new InvalidArgumentError(`${field} ${JSON.stringify(s)}: SIZE must be at least 1`, { field });
  return { containerId, hostId, size };
}

/** The host id that container id `id` is in `map`; undefined when the map does not cover it. */
export function mapToHost(map: readonly IdMapEntry[], id: number): number | undefined {
  for (const e of map) {
    if (id >= e.containerId && id - e.containerId < e.size) return e.hostId + (id - e.containerId);
  }
  return undefined;
}

/** The host uid and gid of the container's root. Throws InvalidArgumentError when 0 is not mapped. */
export function hostRoot(m: IdMapping): { uid: number; gid: number } {
  const uid = mapToHost(m.uidMap, 0);
  const gid = mapToHost(m.gidMap, 0);
  if (uid === undefined || gid === undefined) {
    throw new InvalidArgumentError("the user namespace does not map the container's root (container id 0)", { field: "userns" });
  }
  return { uid, gid };
}

/** Container ids 0..size-1 as host ids uidStart.. and gidStart..: the shape of an "auto" range. */
export function rangeMapping(uidStart: number, gidStart: number, size = RANGE_SIZE): IdMapping {
  return { uidMap: [{ containerId: 0, hostId: uidStart, size }], gidMap: [{ containerId: 0, hostId: gidStart, size }] };
}

/** The container ids a map covers, for messages: `0-65535`, `0-999, 2000-2999`. */
export function describeContainerIds(map: readonly IdMapEntry[]): string {
  return [...map]
    .sort((a, b) => a.containerId - b.containerId)
    .map((e) => describeRange(e.containerId, e.size))
    .join(", ");
}

/**
 * Throws InvalidArgumentError (naming `field`) unless the user's uid, gid and every additional gid are mapped:
 * runc's setuid/setgid/setgroups would fail with EINVAL only once the container exists.
 */
export function assertUserMapped(m: IdMapping, user: { uid: number; gid: number; additionalGids: readonly number[] }, field = "user"): void {
  if (mapToHost(m.uidMap, user.uid) === undefined) {
    throw new InvalidArgumentError(`user ${user.uid} is not mapped by the run's user namespace (${describeContainerIds(m.uidMap)})`, { field });
  }
  for (const gid of [user.gid, ...user.additionalGids]) {
    if (mapToHost(m.gidMap, gid) === undefined) {
      throw new InvalidArgumentError(`group ${gid} is not mapped by the run's user namespace (${describeContainerIds(m.gidMap)})`, { field });
    }
  }
}

/** The maps in the OCI spec's shape (linux.uidMappings / gidMappings). */
export function toOciMappings(m: IdMapping): { uidMappings: LinuxIdMapping[]; gidMappings: LinuxIdMapping[] } {
  const oci = (e: IdMapEntry): LinuxIdMapping => ({ containerID: e.containerId, hostID: e.hostId, size: e.size });
  return { uidMappings: m.uidMap.map(oci), gidMappings: m.gidMap.map(oci) };
}

/** A spec's maps back as an IdMapping (for exec: the container's own), or undefined when it has no user namespace. */
export function fromOciMappings(linux: { uidMappings?: LinuxIdMapping[]; gidMappings?: LinuxIdMapping[] } | undefined): IdMapping | undefined {
  if (!linux?.uidMappings?.length || !linux.gidMappings?.length) return undefined;
  const entry = (e: LinuxIdMapping): IdMapEntry => ({ containerId: e.containerID, hostId: e.hostID, size: e.size });
  return { uidMap: linux.uidMappings.map(entry), gidMap: linux.gidMappings.map(entry) };
}

/** Host ids below this are the host's own accounts: root, system users, login users, nobody. */
const FIRST_UNOWNED_ID = 65536;

/**
 * Explicit maps, validated, with no host id below 65536: a container's root mapped onto an account of the host
 * would own its files (and host root's, for id 0). podman accepts `--uidmap 0:0:65536`; that is `userns "host"`.
 */
export function checkExplicitMaps(mode: IdMapping, field: string): IdMapping {
  const m = validateIdMapping(mode, field);
  for (const [name, map] of [
    ["uidMap", m.uidMap],
    ["gidMap", m.gidMap],
  ] as const) {
    const low = map.find((e) => e.hostId < FIRST_UNOWNED_ID);
    if (low) {
      throw new InvalidArgumentError(
        `${field}.${name}: host id ${low.hostId} is below ${FIRST_UNOWNED_ID}, where the host's own accounts are; map the container to unused host ids (e.g. from 0x10000000), or use userns "host"`,
        { field },
      );
    }
  }
  return m;
}
