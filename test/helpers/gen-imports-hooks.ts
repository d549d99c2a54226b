import { appendFileSync } from "node:fs";

/**
 * Module resolution hooks (node:module register) for a child process of a test: each generated file of src/gen/
 * the process loads is appended to $CTREXEC_TEST_GEN_LOG, so that a test can see which services it paid for.
 */
type NextResolve = (specifier: string, context: unknown) => Promise<{ url: string }>;

export async function resolve(specifier: string, context: unknown, next: NextResolve): Promise<{ url: string }> {
  const resolved = await next(specifier, context);
  const log = process.env["CTREXEC_TEST_GEN_LOG"];
  const name = /\/src\/gen\/(\w+)\.js$/.exec(resolved.url)?.[1];
  if (log && name) appendFileSync(log, `${name}\n`);
  return resolved;
}
