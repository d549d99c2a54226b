import type { NetworkNamespace } from "../oci/spec.js";

/** A network namespace prepared for one run. */
export interface NetworkHandle {
  /** How the spec gets its network namespace. */
  namespace: NetworkNamespace;
  /** True when the run shares the host's network stack (resolv.conf is then kept as the host has it). */
  hostNetwork: boolean;
  /** The host's address as the container sees it (docker's host-gateway), where there is one. */
  gateway?: string;
  /**
   * Gives the namespace back. `reusable`: nothing of the run can be left in it (its task is known deleted, or
   * its init's exit was seen: the pid namespace died with it), so it may serve another run; otherwise a pool
   * must destroy it, since a container that may still run must never share its namespace with the next run.
   * Idempotent.
   */
  close(options: { reusable: boolean }): Promise<void>;
}

/** Makes network namespaces for runs: host, none, CNI bridge, or one of the caller's. */
export interface NetworkProvider {
  /** `privileged`: the run may change the namespace (CAP_NET_ADMIN), so it must not be reused. */
  create(options: { id: string; hostname: string; signal?: AbortSignal | undefined; privileged?: boolean }): Promise<NetworkHandle>;
  close(): Promise<void>;
}
