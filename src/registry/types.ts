/**
 * The registry client's data types: what a registry describes content with (a descriptor as the OCI image spec
 * and Docker's schema 2 share it), credentials, and the client's options.
 */
import type { Logger } from "../util/logger.js";

export interface RegistryPlatform {
  os: string;
  architecture: string;
  variant?: string;
  "os.version"?: string;
  "os.features"?: string[];
}

export interface RegistryDescriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  annotations?: Record<string, string>;
  platform?: RegistryPlatform;
}

export interface RegistryCredentials {
  username: string;
  password: string;
}

export interface RegistryOptions {
  /** Wins over config.json. */
  credentials?: RegistryCredentials;
  /** "host" or "host:port" whose registry may be reached over plain HTTP (loopback registries always may). */
  insecureRegistries?: readonly string[];
  /** Where config.json is; default $DOCKER_CONFIG, else ~/.docker. */
  dockerConfigDir?: string;
  /** A registry that sends nothing for this long while ctrexec waits for it fails the request (UnavailableError). Default 30 s. */
  idleTimeoutMs?: number;
  /** Attempts per request on connection errors, 5xx and 429 (exponential backoff with jitter, Retry-After honoured up to a bound). Default 4. */
  maxAttempts?: number;
  logger?: Logger;
  /** PEM CAs trusted in addition to the system's and NODE_EXTRA_CA_CERTS (a registry with its own CA). */
  caCerts?: readonly (string | Buffer)[];
  /**
   * How the client waits between attempts; the default is a timer. Tests pass one that records the delay and
   * returns at once, so that retries are tested by what happens, not by how long it takes. Must reject when
   * `signal` aborts.
   */
  sleep?: (ms: number, signal: AbortSignal | undefined) => Promise<void>;
}

/** The manifest media types the client fetches and callers understand. */
export const MediaType = {
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerSchema1: "application/vnd.docker.distribution.manifest.v1+json",
  dockerSchema1Signed: "application/vnd.docker.distribution.manifest.v1+prettyjws",
} as const;

/** Anything a registry serves from /manifests/ rather than /blobs/. */
export function isManifestMediaType(mediaType: string): boolean {
  return (
    mediaType === MediaType.ociIndex ||
    mediaType === MediaType.dockerList ||
    mediaType === MediaType.ociManifest ||
    mediaType === MediaType.dockerManifest ||
    mediaType === MediaType.dockerSchema1 ||
    mediaType === MediaType.dockerSchema1Signed
  );
}
