import { checkLogin, removeLogin, saveLogin } from "../registry/login.js";
import type { RegistryCredentials } from "../registry/types.js";

export interface LoginOptions {
  /** Registries (`host` or `host:port`) that may be reached over plain HTTP; loopback registries always may. */
  insecureRegistries?: readonly string[];
  /** Where docker's config.json is: default `$DOCKER_CONFIG`, else `~/.docker`. */
  dockerConfigDir?: string;
  /** PEM certificates of CAs trusted in addition to the system's. */
  caCerts?: readonly (string | Buffer)[];
  signal?: AbortSignal;
}

/**
 * Checks `credentials` against the registry at `host` (its `/v2/` endpoint and auth flow), then saves them in
 * docker's config.json (mode 0600), where `pullImage`, docker, nerdctl and podman find them. Returns the file's
 * path. Nothing is saved when the registry refuses them.
 */
export async function loginRegistry(host: string, credentials: RegistryCredentials, options: LoginOptions = {}): Promise<string> {
  await checkLogin(host, credentials, options);
  return saveLogin(host, credentials, options.dockerConfigDir !== undefined ? { dockerConfigDir: options.dockerConfigDir } : {});
}

/** Removes the saved credentials for `host` from docker's config.json; false when there were none. */
export async function logoutRegistry(host: string, options: { dockerConfigDir?: string } = {}): Promise<boolean> {
  return removeLogin(host, options);
}
