/**
 * The logger ctrexec's library code writes to. It never writes to stdout (that belongs to the container);
 * the default is silent, and the CLI passes a stderr logger at the level the user asked for.
 */

export type LogLevel = "debug" | "info" | "warn" | "error" | "silent";
export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(message: string, fields?: LogFields): void;
  info(message: string, fields?: LogFields): void;
  warn(message: string, fields?: LogFields): void;
  error(message: string, fields?: LogFields): void;
}

const noop = () => {};
export const silentLogger: Logger = { debug: noop, info: noop, warn: noop, error: noop };

const rank: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40, silent: 100 };

export function isLogLevel(value: string): value is LogLevel {
  return Object.hasOwn(rank, value);
}

/** One line per record on stderr: `ctrexec <level> <message> key=value ...`. */
export function stderrLogger(level: LogLevel, write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const make =
    (name: Exclude<LogLevel, "silent">) =>
    (message: string, fields?: LogFields): void => {
      if (rank[name] < rank[level]) return;
      let line = `ctrexec ${name} ${message}`;
      if (fields) {
        for (const [k, v] of Object.entries(fields)) {
          const s = v instanceof Error ? v.message : typeof v === "string" ? v : JSON.stringify(v);
          line += ` ${k}=${/[\s"]/.test(s ?? "") ? JSON.stringify(s) : s}`;
        }
      }
      write(`${line}\n`);
    };
  return { debug: make("debug"), info: make("info"), warn: make("warn"), error: make("error") };
}
