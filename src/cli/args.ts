import { InvalidArgumentError } from "../index.js";

/** One option of a command: `--name`, optionally `-s`, taking a value or not, once or repeatedly. */
export interface OptionSpec {
  name: string;
  short?: string;
  /** "flag": no value; "value": the last one wins; "list": every occurrence is kept. */
  kind: "flag" | "value" | "list";
  /** For --help. */
  arg?: string;
  help: string;
}

export interface Parsed {
  flags: Set<string>;
  values: Map<string, string>;
  lists: Map<string, string[]>;
  /** Everything from the first positional on (options of the command inside are not ours). */
  rest: string[];
}

/**
 * docker-style option parsing: `--name value`, `--name=value`, `-s value`, `-svalue`, grouped short flags
 * (`-it`), and options end at the first positional or at `--`, so `run ls -l` passes `-l` to ls.
 */
export function parseOptions(argv: readonly string[], specs: readonly OptionSpec[], command: string): Parsed {
  const byName = new Map(specs.map((s) => [s.name, s]));
  const byShort = new Map(specs.filter((s) => s.short).map((s) => [s.short!, s]));
  const out: Parsed = { flags: new Set(), values: new Map(), lists: new Map(), rest: [] };
  const set = (spec: OptionSpec, value: string | undefined) => {
    if (spec.kind === "flag") out.flags.add(spec.name);
    else if (spec.kind === "value") out.values.set(spec.name, value!);
    else out.lists.set(spec.name, [...(out.lists.get(spec.name) ?? []), value!]);
  };
  const bad = (msg: string) => new InvalidArgumentError(`${command}: ${msg}`, { field: "argv" });
  let i = 0;
  for (; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") {
      i++;
      break;
    }
    if (a.startsWith("--")) {
      const eq = a.indexOf("=");
      const name = a.slice(2, eq < 0 ? undefined : eq);
      const spec = byName.get(name);
      if (!spec) throw bad(`unknown flag: --${name}`);
      if (spec.kind === "flag") {
        if (eq >= 0) {
          const v = a.slice(eq + 1);
          if (v !== "true" && v !== "false") throw bad(`flag --${name} takes no value`);
          if (v === "true") out.flags.add(name);
          else out.flags.delete(name);
        } else set(spec, undefined);
        continue;
      }
      const value: string | undefined = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (value === undefined) throw bad(`flag needs an argument: --${name}`);
      set(spec, value);
      continue;
    }
    if (a.startsWith("-") && a.length > 1) {
      for (let j = 1; j < a.length; j++) {
        const spec = byShort.get(a[j]!);
        if (!spec) throw bad(`unknown shorthand flag: '${a[j]}' in ${a}`);
        if (spec.kind === "flag") {
          set(spec, undefined);
          continue;
        }
        const value = j + 1 < a.length ? a.slice(j + 1) : argv[++i];
        if (value === undefined) throw bad(`flag needs an argument: '${a[j]}' in ${a}`);
        set(spec, value);
        break;
      }
      continue;
    }
    break;
  }
  out.rest = argv.slice(i);
  return out;
}

/** The help text's option table. */
export function optionsHelp(specs: readonly OptionSpec[]): string {
  const rows = specs.map((s) => {
    const names = `${s.short ? `-${s.short}, ` : "    "}--${s.name}${s.arg ? ` ${s.arg}` : ""}`;
    return [names, s.help] as const;
  });
  const width = Math.min(34, Math.max(...rows.map(([n]) => n.length)) + 2);
  return rows.map(([n, h]) => `  ${n.padEnd(width)}${h}`).join("\n");
}
