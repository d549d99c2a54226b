/** The registry HTTP client: references, manifests and blobs over the distribution API, and docker's logins. */
export { RegistryClient } from "./client.js";
export { checkLogin, loadCredentials, removeLogin, saveLogin } from "./login.js";
export { type ImageReference, parseReference } from "./reference.js";
export {
  isIndexMediaType,
  isManifestMediaType,
  MediaType,
  type RegistryCredentials,
  type RegistryDescriptor,
  type RegistryOptions,
  type RegistryPlatform,
} from "./types.js";
