import type { ContainerdClient } from "../containerd/client.js";
import type { ContainerRecord, ProcessState } from "../containerd/types.js";
import { NotFoundError } from "../errors.js";
import { LABEL, ownerAlive } from "./labels.js";

/** One run of any ctrexec process in a namespace: its container, its task's state and what its labels say. */
export interface RunInfo {
  /** The container id. */
  id: string;
  /** The task's pid; 0 when there is no task. */
  pid: number;
  /** The task's status in lower case ("running", "stopped", …), or "none" when there is no task. */
  status: string;
  /** The command (args) the run was started with; the label's text when it was truncated. */
  command: string[] | string;
  /** When the run started (ISO 8601), "" when unknown. */
  created: string;
  /** The process that made the run (`host/pid/starttime/…`). */
  owner: string;
  /** Whether that process is alive; null when this process cannot tell (another host or pid namespace). */
  ownerAlive: boolean | null;
  /** Finished, and kept by its live owner so that its next runs reuse the shim (deleted within minutes). */
  keptForShimReuse: boolean;
  /** Every label on the container, ctrexec's own ("ctrexec.*") and the caller's. */
  labels: Record<string, string>;
}

/** Whether a container was made by ctrexec (it carries the owner label). */
function isRun(record: ContainerRecord): boolean {
  return Boolean(record.labels[LABEL.owner]);
}

function runInfo(record: ContainerRecord, task: ProcessState | undefined): RunInfo {
  const owner = record.labels[LABEL.owner] ?? "";
  const label = record.labels[LABEL.command] ?? "";
  let command: string[] | string = label;
  try {
    const parsed: unknown = JSON.parse(label);
    if (Array.isArray(parsed) && parsed.every((a) => typeof a === "string")) command = parsed;
  } catch {
    // truncated label: keep the text
  }
  const status = (task?.status ?? "none").toLowerCase();
  const alive = ownerAlive(owner) ?? null;
  return {
    id: record.id,
    pid: task?.pid ?? 0,
    status,
    command,
    created: record.labels[LABEL.started] ?? "",
    owner,
    ownerAlive: alive,
    keptForShimReuse: status === "stopped" && alive !== false && record.labels[LABEL.shimFounder] === "true",
    labels: { ...record.labels },
  };
}

/**
 * The runs in the client's namespace made by any ctrexec process: in progress, finished and still being deleted,
 * or kept for shim reuse. Containers ctrexec did not make are left out.
 */
export async function listRuns(client: ContainerdClient): Promise<RunInfo[]> {
  const [containers, tasks] = await Promise.all([client.containers.list(), client.tasks.list()]);
  const byId = new Map(tasks.map((t) => [t.id, t]));
  return containers.filter(isRun).map((c) => runInfo(c, byId.get(c.id)));
}

/** One run by container id; a NotFoundError when there is no such container or ctrexec did not make it. */
export async function getRun(client: ContainerdClient, id: string): Promise<RunInfo> {
  let record: ContainerRecord;
  try {
    record = await client.containers.get(id);
  } catch (err) {
    if (err instanceof NotFoundError) throw new NotFoundError(`container ${id} not found`, { cause: err });
    throw err;
  }
  if (!isRun(record)) throw new NotFoundError(`container ${id} not found (not a ctrexec run)`);
  const task = await client.tasks.get({ containerId: id }).catch((err: unknown) => {
    if (err instanceof NotFoundError) return undefined;
    throw err;
  });
  return runInfo(record, task);
}
