import { status, type ServiceError } from "@grpc/grpc-js";
import {
  AlreadyExistsError,
  CanceledError,
  type CtrexecError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  NotFoundError,
  UnavailableError,
  UnknownError,
} from "../errors.js";

export interface CallContext {
  /** The socket address, for messages that tell the user where we looked. */
  address: string;
  /** `Service.Method`, e.g. `Tasks.Create`. */
  method: string;
  timeoutMs?: number | undefined;
  /** The abort reason when the caller's signal cancelled the call. */
  abortReason?: unknown;
}

function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === "number";
}

/** grpc-js's UNAVAILABLE details are long ("No connection established. Last error: ..."); keep the errno. */
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
      return details.replace(/\. Resolution note: \.?$/, "");
    default:
      return `connect ${errno}`;
  }
}

/** The one place where a gRPC status becomes a typed ctrexec error. */
export function fromGrpcError(err: unknown, ctx: CallContext): CtrexecError {
  if (!isServiceError(err)) {
    return new UnknownError(`containerd ${ctx.method}: ${err instanceof Error ? err.message : String(err)}`, {
      cause: err,
    });
  }
  const details = err.details || err.message;
  const options = { cause: err };
  switch (err.code) {
    case status.NOT_FOUND:
      return new NotFoundError(details, options);
    case status.ALREADY_EXISTS:
      return new AlreadyExistsError(details, options);
    case status.FAILED_PRECONDITION:
      return new FailedPreconditionError(details, options);
    case status.INVALID_ARGUMENT:
    case status.OUT_OF_RANGE:
      return new InvalidArgumentError(details, options);
    case status.UNAVAILABLE:
      return new UnavailableError(
        `containerd is not reachable at ${ctx.address} (${connectionProblem(details)}). Is containerd running? ` +
          `Start it (scripts/setup.sh does) or point --address / CONTAINERD_ADDRESS at its socket.`,
        options,
      );
    case status.CANCELLED:
      return new CanceledError(`containerd ${ctx.method} was canceled`, {
        cause: ctx.abortReason !== undefined ? ctx.abortReason : err,
      });
    case status.DEADLINE_EXCEEDED:
      return new DeadlineExceededError(
        `containerd did not answer ${ctx.method}` +
          (ctx.timeoutMs !== undefined ? ` within ${ctx.timeoutMs} ms` : "") +
          `: ${details}`,
        options,
      );
    default:
      return new UnknownError(details, options);
  }
}
