import { register } from "node:module";

// `node --import` this file to record the generated files a process loads (gen-imports-hooks.ts).
register("./gen-imports-hooks.js", import.meta.url);
