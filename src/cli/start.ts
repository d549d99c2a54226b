#!/usr/bin/env node
/**
 * `ctrexec` as users run it (dist/src/cli/ctrexec.mjs, made from this file by scripts/build.mjs): loads the CLI's
 * bundle, dist/src/cli/ctrexec.cjs, with its code cache when the build left a valid one (code-cache.ts).
 */
import { fileURLToPath } from "node:url";
import { loadBundle } from "./code-cache.js";

const bundle = fileURLToPath(new URL("./ctrexec.cjs", import.meta.url));
const main = loadBundle(bundle, `${bundle}.cache`).exports["main"] as (argv: string[]) => Promise<number>;
process.exitCode = await main(process.argv.slice(2));
