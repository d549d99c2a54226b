import { type Attributes, INVALID_SPAN_CONTEXT, type Span, trace, type Tracer } from "@opentelemetry/api";

/** A span from the caller's tracer, or a non-recording one: the library never reaches for a global tracer. */
export function startSpan(tracer: Tracer | undefined, name: string, attributes: Attributes = {}): Span {
  return tracer ? tracer.startSpan(name, { attributes }) : trace.wrapSpanContext(INVALID_SPAN_CONTEXT);
}

export type { Span, Tracer };
