import { randomBytes } from "node:crypto";
import type { ContainerdClient } from "../containerd/client.js";
import { DEFAULT_RUNTIME, deleteContainerRecord, deleteTask } from "../containerd/run-task.js";
import { jsonAny, SPEC_TYPE_URL } from "../containerd/types.js";
import { defaultSpec } from "../oci/defaults.js";
import { serializeSpec } from "../oci/serialize.js";
import type { Logger } from "../util/logger.js";
import { LABEL, ownerId } from "./labels.js";

/** The runc v2 shim hosts every container whose spec carries the same value of this annotation. */
export const SHIM_GROUP_ANNOTATION = "io.containerd.runc.v2.group";

/**
 * One long-lived shim for many runs: every run's spec names the group, and an idle anchor container (a
 * `sleep` in the default rootfs) keeps the group's shim alive between runs, so a run no longer starts and
 * stops a shim of its own. Opt-in: if that one shim dies, every run in the group dies with it.
 */
export class ShimGroup {
  readonly name: string;
  readonly #client: ContainerdClient;
  readonly #logger: Logger;
  #anchor: Promise<string> | undefined;

  constructor(client: ContainerdClient, name: string, logger: Logger) {
    this.#client = client;
    this.name = name;
    this.#logger = logger;
  }

  /** Starts the anchor once; later calls wait for the same start. */
  ensure(rootfs: string, runtime = DEFAULT_RUNTIME): Promise<string> {
    this.#anchor ??= this.#start(rootfs, runtime).catch((err: unknown) => {
      this.#anchor = undefined;
      throw err;
    });
    return this.#anchor;
  }

  async #start(rootfs: string, runtime: string): Promise<string> {
    const id = `ctrexec-anchor-${randomBytes(6).toString("hex")}`;
    const spec = defaultSpec(this.#client.namespace, id);
    spec.process!.args = ["sleep", "2147483647"];
    spec.root = { path: rootfs, readonly: true };
    spec.mounts = spec.mounts!.filter((m) => m.destination !== "/run");
    spec.annotations = { [SHIM_GROUP_ANNOTATION]: this.name };
    await this.#client.containers.create({
      id,
      runtime: { name: runtime },
      spec: jsonAny(SPEC_TYPE_URL, serializeSpec(spec)),
      labels: { [LABEL.owner]: ownerId(), [LABEL.command]: JSON.stringify(["shim group anchor", this.name]) },
    });
    try {
      await this.#client.tasks.create({ containerId: id });
      await this.#client.tasks.start({ containerId: id });
    } catch (err) {
      await deleteTask(this.#client, id, this.#logger).catch(() => {});
      await deleteContainerRecord(this.#client, id).catch(() => {});
      throw err;
    }
    return id;
  }

  /** Stops and removes the anchor, which lets the shared shim exit. Idempotent. */
  async close(): Promise<void> {
    const anchor = await this.#anchor?.catch(() => undefined);
    this.#anchor = undefined;
    if (!anchor) return;
    if (await deleteTask(this.#client, anchor, this.#logger).catch(() => false)) {
      await deleteContainerRecord(this.#client, anchor).catch(() => {});
    }
  }
}
