import { fromBinary as decode } from "@bufbuild/protobuf";
import type { Envelope as PbEnvelope } from "../gen/events_pb.js";
import {
  TaskDeleteSchema,
  TaskExecAddedSchema,
  TaskExecStartedSchema,
  TaskExitSchema,
  TaskOOMSchema,
  TaskStartSchema,
} from "../gen/task_events_pb.js";
import { timestamp } from "./convert.js";
import type { Envelope, TaskEvent } from "./types.js";

/** Events' converters (see convert.ts): the task events' generated schemas load with the Events service only. */

const EVENT_PREFIX = "containerd.events.";

/** A /tasks/* event's payload by its name (the type URL's last part), or null for a type we do not define. */
/** Anyone who can reach containerd's socket can publish an event: a payload that does not decode is no event of ours. */
function taskEventOrNull(typeName: string, value: Uint8Array): TaskEvent | null {
  try {
    return taskEvent(typeName, value);
  } catch {
    return null;
  }
}

function taskEvent(typeName: string, value: Uint8Array): TaskEvent | null {
  switch (typeName) {
    case `${EVENT_PREFIX}TaskStart`: {
      const e = decode(TaskStartSchema, value);
      return { type: "TaskStart", containerId: e.containerId, pid: e.pid };
    }
    case `${EVENT_PREFIX}TaskExit`: {
      const e = decode(TaskExitSchema, value);
      return { type: "TaskExit", containerId: e.containerId, id: e.id, pid: e.pid, exitStatus: e.exitStatus, exitedAt: timestamp(e.exitedAt) };
    }
    case `${EVENT_PREFIX}TaskDelete`: {
      const e = decode(TaskDeleteSchema, value);
      return { type: "TaskDelete", containerId: e.containerId, id: e.id, pid: e.pid, exitStatus: e.exitStatus, exitedAt: timestamp(e.exitedAt) };
    }
    case `${EVENT_PREFIX}TaskOOM`:
      return { type: "TaskOOM", containerId: decode(TaskOOMSchema, value).containerId };
    case `${EVENT_PREFIX}TaskExecAdded`: {
      const e = decode(TaskExecAddedSchema, value);
      return { type: "TaskExecAdded", containerId: e.containerId, execId: e.execId };
    }
    case `${EVENT_PREFIX}TaskExecStarted`: {
      const e = decode(TaskExecStartedSchema, value);
      return { type: "TaskExecStarted", containerId: e.containerId, execId: e.execId, pid: e.pid };
    }
    default:
      return null;
  }
}

export function envelope(raw: PbEnvelope): Envelope {
  const typeUrl = raw.event?.typeUrl ?? "";
  // Event type URLs are the message's full name with no host part, e.g. "containerd.events.TaskExit".
  const typeName = typeUrl.slice(typeUrl.lastIndexOf("/") + 1);
  return {
    timestamp: timestamp(raw.timestamp),
    namespace: raw.namespace,
    topic: raw.topic,
    event: raw.event ? taskEventOrNull(typeName, raw.event.value) : null,
    eventType: typeName,
  };
}
