/**
 * Typed errors with stable codes. Everything ctrexec throws on purpose is a CtrexecError; gRPC statuses are
 * turned into these once, in containerd/errors.ts, and nothing above that module sees a gRPC status.
 */

export type ErrorCode =
  | "NOT_FOUND"
  | "ALREADY_EXISTS"
  | "FAILED_PRECONDITION"
  | "INVALID_ARGUMENT"
  | "UNAVAILABLE"
  | "CANCELED"
  | "DEADLINE_EXCEEDED"
  | "UNKNOWN"
  | "UNAUTHENTICATED"
  | "DATA_LOSS"
  | "EXITED";

const brand = Symbol.for("ctrexec.error");

export class CtrexecError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.code = code;
    Object.defineProperty(this, brand, { value: true });
  }

  /** True for errors made by any copy of this package (a bundler or two installs may load it twice). */
  static is(value: unknown): value is CtrexecError {
    return typeof value === "object" && value !== null && (value as Record<symbol, unknown>)[brand] === true;
  }
}
Object.defineProperty(CtrexecError.prototype, "name", { value: "CtrexecError", configurable: true });

function named<T extends abstract new (...args: never[]) => CtrexecError>(cls: T, name: string): T {
  Object.defineProperty(cls.prototype, "name", { value: name, configurable: true });
  return cls;
}

export class NotFoundError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("NOT_FOUND", message, options);
  }
}
named(NotFoundError, "NotFoundError");

export class AlreadyExistsError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("ALREADY_EXISTS", message, options);
  }
}
named(AlreadyExistsError, "AlreadyExistsError");

export class FailedPreconditionError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("FAILED_PRECONDITION", message, options);
  }
}
named(FailedPreconditionError, "FailedPreconditionError");

/** Bad input. `field` names the offending option when there is one. */
export class InvalidArgumentError extends CtrexecError {
  readonly field: string | undefined;
  constructor(message: string, options?: ErrorOptions & { field?: string }) {
    super("INVALID_ARGUMENT", message, options);
    this.field = options?.field;
  }
}
named(InvalidArgumentError, "InvalidArgumentError");

export class UnavailableError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNAVAILABLE", message, options);
  }
}
named(UnavailableError, "UnavailableError");

export class CanceledError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("CANCELED", message, options);
  }
}
named(CanceledError, "CanceledError");

export class DeadlineExceededError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("DEADLINE_EXCEEDED", message, options);
  }
}
named(DeadlineExceededError, "DeadlineExceededError");

/** A registry refused the credentials it was given, or asked for credentials ctrexec does not have. */
export class UnauthenticatedError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNAUTHENTICATED", message, options);
  }
}
named(UnauthenticatedError, "UnauthenticatedError");

/** Content did not match what it claims to be: a digest or size mismatch, a truncated download. */
export class DataLossError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("DATA_LOSS", message, options);
  }
}
named(DataLossError, "DataLossError");

/** Whether a failed call may have taken effect in containerd all the same: it was cut off, not refused. */
export function outcomeUnknown(err: unknown): boolean {
  return err instanceof DeadlineExceededError || err instanceof UnavailableError || err instanceof CanceledError;
}

/** Anything else; `message` carries the daemon's or runtime's own words. */
export class UnknownError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("UNKNOWN", message, options);
  }
}
named(UnknownError, "UnknownError");

/** containerd's UnknownExitStatus: the exit status could not be determined. */
export const UNKNOWN_EXIT_STATUS = 255;

/** A process exited with a code that does not count as success. */
export class ExitError extends CtrexecError {
  readonly exitCode: number;
  readonly oomKilled: boolean;

  constructor(exitCode: number, options?: ErrorOptions & { oomKilled?: boolean; message?: string }) {
    const base = options?.message ?? `exit code: ${exitCode}`;
    super("EXITED", options?.oomKilled ? `${base} (killed: out of memory)` : base, options);
    this.exitCode = exitCode;
    this.oomKilled = options?.oomKilled ?? false;
  }

  /** The signal number when the code says the process died of a signal (128+n). */
  get signal(): number | undefined {
    return this.exitCode > 128 && this.exitCode < 128 + 65 ? this.exitCode - 128 : undefined;
  }
}
named(ExitError, "ExitError");

/** exec into a run whose process is gone: "container X has stopped" or "... has exited with error: ...". */
export class ContainerExitedError extends CtrexecError {
  constructor(message: string, options?: ErrorOptions) {
    super("FAILED_PRECONDITION", message, options);
  }
}
named(ContainerExitedError, "ContainerExitedError");

export type StartFailure = "not-found" | "not-executable" | "other";

/**
 * The runtime could not start the process. `reason` tells a missing command (the CLI's 127) from one that
 * cannot be executed (126); the message keeps the runtime's words.
 */
export class StartError extends CtrexecError {
  readonly reason: StartFailure;
  constructor(message: string, reason: StartFailure, options?: ErrorOptions) {
    super("UNKNOWN", message, options);
    this.reason = reason;
  }
}
named(StartError, "StartError");

/** Something prune tried to remove and could not; it is tried again by the next prune. */
export interface PruneFailure {
  /** What it is, as in prune's lines: `run dir /path`, `task ID`, `lease ID`... */
  what: string;
  error: unknown;
}

/**
 * Prune did everything it could, but some things of dead owners are left (a run dir that would not go, a task
 * containerd would not delete...). `removed` lists what it did remove, `failures` what is left and why; each
 * was logged as it happened. Running prune again retries them once their cause is fixed.
 */
export class PruneIncompleteError extends UnknownError {
  readonly removed: string[];
  readonly failures: PruneFailure[];
  constructor(removed: string[], failures: PruneFailure[]) {
    const list = failures.map((f) => `${f.what} (${f.error instanceof Error ? f.error.message : String(f.error)})`);
    super(`prune left ${failures.length} thing(s) of dead runs in place: ${list.join("; ")}. Fix the cause and run ctrexec prune again`);
    this.removed = removed;
    this.failures = failures;
  }
}
named(PruneIncompleteError, "PruneIncompleteError");
