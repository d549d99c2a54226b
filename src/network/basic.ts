import type { NetworkHandle, NetworkProvider } from "./types.js";

const noop = async (): Promise<void> => {};

/** The host's network stack: no network namespace in the spec. */
export function hostNetwork(): NetworkProvider {
  const handle: NetworkHandle = { namespace: { kind: "host" }, hostNetwork: true, gateway: "127.0.0.1", close: noop };
  return { create: async () => handle, close: noop };
}

/** A fresh network namespace with only loopback, which runc brings up. */
export function noneNetwork(): NetworkProvider {
  const handle: NetworkHandle = { namespace: { kind: "new" }, hostNetwork: false, close: noop };
  return { create: async () => handle, close: noop };
}
