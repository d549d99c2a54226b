import { spawn } from "node:child_process";
import { constants as fsc } from "node:fs";
import { access, readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { FailedPreconditionError, InvalidArgumentError, UnknownError } from "../errors.js";

/** A CNI network configuration list (.conflist): plugins run in order on ADD, in reverse on DEL. */
export interface CniNetworkConfig {
  cniVersion: string;
  name: string;
  plugins: Array<Record<string, unknown> & { type: string }>;
}

export interface CniRuntime {
  containerId: string;
  netns: string;
  ifname: string;
  pluginDirs: readonly string[];
  args?: Record<string, string>;
}

/** A plugin failed: `message` quotes the plugin's own `msg` (and `details`). */
export class CniError extends UnknownError {
  readonly plugin: string;
  readonly cniCode: number | undefined;
  constructor(plugin: string, message: string, cniCode?: number, options?: ErrorOptions) {
    super(message, options);
    this.plugin = plugin;
    this.cniCode = cniCode;
  }
}
Object.defineProperty(CniError.prototype, "name", { value: "CniError", configurable: true });

export const DEFAULT_PLUGIN_DIRS: readonly string[] = ["/usr/lib/cni", "/opt/cni/bin"];

export async function findPlugin(type: string, dirs: readonly string[]): Promise<string> {
  if (!/^[A-Za-z0-9_.-]+$/.test(type))
    throw new InvalidArgumentError(`CNI plugin type ${JSON.stringify(type)} is not a plugin name`, { field: "network" });
  for (const d of dirs) {
    const p = join(d, type);
    try {
      await access(p, fsc.X_OK);
      return p;
    } catch {
      // next dir
    }
  }
  throw new FailedPreconditionError(
    `CNI plugin "${type}" not found in ${dirs.join(", ")}: apt-get install containernetworking-plugins (scripts/setup.sh does)`,
  );
}

/** Validates the shape of a network config list; throws InvalidArgumentError naming what is wrong. */
export function validateConfig(conf: unknown, source: string): CniNetworkConfig {
  const bad = (why: string) => new InvalidArgumentError(`bad CNI config ${source}: ${why}`, { field: "network" });
  if (typeof conf !== "object" || conf === null) throw bad("not a JSON object");
  const c = conf as Record<string, unknown>;
  if (typeof c["name"] !== "string" || c["name"] === "") throw bad('"name" is missing');
  if (typeof c["cniVersion"] !== "string") throw bad('"cniVersion" is missing');
  // A single-plugin .conf is a list of one.
  const plugins = Array.isArray(c["plugins"]) ? c["plugins"] : typeof c["type"] === "string" ? [c] : undefined;
  if (!plugins || plugins.length === 0) throw bad('"plugins" is missing or empty');
  for (const p of plugins) {
    if (typeof p !== "object" || p === null || typeof (p as Record<string, unknown>)["type"] !== "string") throw bad('every plugin needs a "type"');
  }
  return { cniVersion: c["cniVersion"], name: c["name"], plugins: plugins as CniNetworkConfig["plugins"] };
}

/** Finds the network named `name` among the .conflist/.conf/.json files of `dir`; undefined when absent. */
export async function loadNetworkConfig(dir: string, name: string): Promise<CniNetworkConfig | undefined> {
  let files: string[];
  try {
    files = (await readdir(dir)).filter((f) => /\.(conflist|conf|json)$/.test(f)).sort();
  } catch {
    return undefined;
  }
  for (const f of files) {
    let parsed: unknown;
    const path = join(dir, f);
    try {
      parsed = JSON.parse(await readFile(path, "utf8"));
    } catch (err) {
      throw new InvalidArgumentError(`bad CNI config ${path}: ${(err as Error).message}`, { field: "network" });
    }
    if ((parsed as { name?: unknown })?.name === name) return validateConfig(parsed, path);
  }
  return undefined;
}

function invoke(pluginPath: string, command: "ADD" | "DEL", conf: Record<string, unknown>, rt: CniRuntime): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const cniArgs = Object.entries(rt.args ?? {})
      .map(([k, v]) => `${k}=${v}`)
      .join(";");
    const child = spawn(pluginPath, [], {
      env: {
        PATH: process.env["PATH"] ?? "/usr/sbin:/usr/bin:/sbin:/bin",
        CNI_COMMAND: command,
        CNI_CONTAINERID: rt.containerId,
        CNI_NETNS: rt.netns,
        CNI_IFNAME: rt.ifname,
        CNI_PATH: rt.pluginDirs.join(":"),
        ...(cniArgs ? { CNI_ARGS: cniArgs } : {}),
      },
      stdio: ["pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => err.push(d));
    child.on("error", (e) =>
      reject(new CniError(String(conf["type"]), `CNI plugin ${pluginPath} could not run: ${e.message}`, undefined, { cause: e })),
    );
    child.on("close", (code) => {
      const text = Buffer.concat(out).toString("utf8").trim();
      let parsed: Record<string, unknown> = {};
      try {
        parsed = text ? (JSON.parse(text) as Record<string, unknown>) : {};
      } catch {
        // not JSON: reported below with the raw text
      }
      if (code === 0) return resolve(parsed);
      const msg = typeof parsed["msg"] === "string" ? parsed["msg"] : text || Buffer.concat(err).toString("utf8").trim();
      const details = typeof parsed["details"] === "string" && parsed["details"] ? ` (${parsed["details"]})` : "";
      reject(
        new CniError(
          String(conf["type"]),
          `CNI ${command} failed in plugin "${String(conf["type"])}": ${msg}${details}`,
          typeof parsed["code"] === "number" ? parsed["code"] : undefined,
        ),
      );
    });
    child.stdin.end(JSON.stringify(conf));
  });
}

function pluginConf(list: CniNetworkConfig, plugin: Record<string, unknown>, prevResult: unknown): Record<string, unknown> {
  const conf: Record<string, unknown> = { ...plugin, name: list.name, cniVersion: list.cniVersion };
  if (prevResult !== undefined) conf["prevResult"] = prevResult;
  return conf;
}

/** CNI ADD of a whole list; returns the last plugin's result (which DEL needs back). */
export async function cniAdd(list: CniNetworkConfig, rt: CniRuntime): Promise<Record<string, unknown>> {
  let prev: Record<string, unknown> | undefined;
  for (const plugin of list.plugins) {
    const path = await findPlugin(plugin.type, rt.pluginDirs);
    prev = await invoke(path, "ADD", pluginConf(list, plugin, prev), rt);
  }
  return prev ?? {};
}

/** CNI DEL of a whole list, in reverse; every plugin runs even if one fails (the first failure is thrown). */
export async function cniDel(list: CniNetworkConfig, rt: CniRuntime, prevResult?: unknown): Promise<void> {
  let first: unknown;
  for (const plugin of [...list.plugins].reverse()) {
    try {
      const path = await findPlugin(plugin.type, rt.pluginDirs);
      await invoke(path, "DEL", pluginConf(list, plugin, prevResult), rt);
    } catch (err) {
      first ??= err;
    }
  }
  if (first !== undefined) throw first;
}
