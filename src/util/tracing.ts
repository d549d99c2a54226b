import type { Attributes, Span, SpanContext, Tracer } from "@opentelemetry/api";

/** The span context of a span that records nothing (all-zero ids, no flags), as OpenTelemetry defines it. */
const INVALID_CONTEXT: SpanContext = { traceId: "0".repeat(32), spanId: "0".repeat(16), traceFlags: 0 };

/**
 * What runs without a tracer get. Written here rather than taken from @opentelemetry/api's `trace`: the
 * package is an optional peer dependency, imported for its types only, so that neither a library user without
 * tracing nor every CLI invocation loads it.
 */
class NonRecordingSpan implements Span {
  spanContext(): SpanContext {
    return INVALID_CONTEXT;
  }
  setAttribute(): this {
    return this;
  }
  setAttributes(): this {
    return this;
  }
  addEvent(): this {
    return this;
  }
  addLink(): this {
    return this;
  }
  addLinks(): this {
    return this;
  }
  setStatus(): this {
    return this;
  }
  updateName(): this {
    return this;
  }
  end(): void {}
  isRecording(): boolean {
    return false;
  }
  recordException(): void {}
}

/** A span from the caller's tracer, or a non-recording one: the library never reaches for a global tracer. */
export function startSpan(tracer: Tracer | undefined, name: string, attributes: Attributes = {}): Span {
  return tracer ? tracer.startSpan(name, { attributes }) : new NonRecordingSpan();
}

export type { Span, Tracer };
