import {
  AlreadyExistsError,
  CanceledError,
  type CtrexecError,
  DataLossError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnknownError,
} from "../errors.js";
import { isGrpcStatusError, Status } from "./grpc-wire.js";

export interface CallContext {
  /** The socket address, for messages that tell the user where we looked. */
  address: string;
  /** `Service.Method`, e.g. `Tasks.Create`. */
  method: string;
  timeoutMs?: number | undefined;
  /** The abort reason when the caller's signal cancelled the call. */
  abortReason?: unknown;
}

/** The transport's UNAVAILABLE details name the failed connect ("connect ENOENT /path"); keep the errno. */
function connectionProblem(details: string): string {
  const errno = /connect (E[A-Z]+)/.exec(details)?.[1];
  switch (errno) {
    case "ENOENT":
      return "no socket at that path";
    case "ECONNREFUSED":
      return "connection refused";
    case "EACCES":
      return "permission denied";
    case undefined:
      return details;
    default:
      return `connect ${errno}`;
  }
}

/** The one place where a gRPC status becomes a typed ctrexec error. */
export function fromGrpcError(err: unknown, ctx: CallContext): CtrexecError {
  if (!isGrpcStatusError(err)) {
    return new UnknownError(`containerd ${ctx.method}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  const details = err.details || err.message;
  const options = { cause: err };
  switch (err.code) {
    case Status.NOT_FOUND:
      return new NotFoundError(details, options);
    case Status.ALREADY_EXISTS:
      return new AlreadyExistsError(details, options);
    case Status.FAILED_PRECONDITION:
      // containerd's content store refuses a commit whose bytes are not what the writer said they would be
      // (its local and metadata stores word it these ways): the data is wrong, not the store's state.
      if (ctx.method === "Content.Write" && /unexpected commit (?:digest|size)|failed size validation/.test(details)) {
        return new DataLossError(`containerd refused the content: ${details}`, options);
      }
      return new FailedPreconditionError(details, options);
    case Status.DATA_LOSS:
      return new DataLossError(details, options);
    case Status.INVALID_ARGUMENT:
    case Status.OUT_OF_RANGE:
      return new InvalidArgumentError(details, options);
    case Status.UNAVAILABLE:
      // An ingest ref held by another Write stream: containerd answered, so it is reachable.
      if (ctx.method === "Content.Write" && /\blocked\b/.test(details)) return new UnavailableError(`containerd ${ctx.method}: ${details}`, options);
      return new UnavailableError(
        `containerd is not reachable at ${ctx.address} (${connectionProblem(details)}). Is containerd running? ` +
          `Start it (scripts/setup.sh does) or point --address / CONTAINERD_ADDRESS at its socket.`,
        options,
      );
    case Status.CANCELLED:
      return new CanceledError(`containerd ${ctx.method} was canceled`, {
        cause: ctx.abortReason !== undefined ? ctx.abortReason : err,
      });
    case Status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(
        `containerd did not answer ${ctx.method}${ctx.timeoutMs !== undefined ? ` within ${ctx.timeoutMs} ms` : ""}: ${details}`,
        options,
      );
    default:
      return new UnknownError(details, options);
  }
}
