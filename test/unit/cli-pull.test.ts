import assert from "node:assert/strict";
import { EventEmitter } from "node:events";
import { Readable } from "node:stream";
import { describe, it } from "node:test";
import { parseOptions } from "../../src/cli/args.js";
import { loginCommand, logoutCommand } from "../../src/cli/commands/login.js";
import { pullCommand } from "../../src/cli/commands/pull.js";
import { buildRun, parsePullPolicy } from "../../src/cli/commands/run.js";
import { contextFrom, GLOBAL_OPTIONS } from "../../src/cli/context.js";
import { exitCodeFor } from "../../src/cli/exit-codes.js";
import { type PromptInput, readAll, readSecret } from "../../src/cli/prompt.js";
import { formatBytes, formatRate, PullProgressView, progressModeFor, shortDigest } from "../../src/cli/pull-progress.js";
import { PullInterrupted, parsePlatform } from "../../src/cli/pulling.js";
import { CanceledError, InvalidArgumentError, type PullProgress } from "../../src/index.js";

const ESC = "\x1b";
const digest = (n: number) => `sha256:${n.toString(16).padStart(2, "0").repeat(32)}`;
const short = (n: number) => shortDigest(digest(n));

/** What a test renderer wrote, and a clock the test moves. */
function harness(options: { mode: "tty" | "plain" | "quiet"; columns?: number; rows?: number; header?: string }) {
  let now = 0;
  let out = "";
  const view = new PullProgressView(
    { write: (s: string) => (out += s) },
    { ...options, now: () => now, ...(options.header !== undefined ? { header: options.header } : {}) },
  );
  const ev = (e: Omit<PullProgress, "name">) => view.update({ name: "127.0.0.1:5000/t/img:1", ...e });
  return {
    view,
    ev,
    tick: (ms: number) => {
      now += ms;
    },
    take: () => {
      const s = out;
      out = "";
      return s;
    },
    get out() {
      return out;
    },
  };
}

/**
 * A terminal good enough for the renderer's output: text, "\n", erase line (ESC[2K) and cursor up (ESC[nA). It
 * fails when the cursor is sent above the visible screen, which a real terminal would clamp (garbling the display).
 */
class Screen {
  lines: string[] = [""];
  row = 0;
  constructor(readonly rows: number) {}
  feed(s: string): void {
    let i = 0;
    while (i < s.length) {
      if (s[i] === "\n") {
        this.row++;
        if (this.row === this.lines.length) this.lines.push("");
        i++;
      } else if (s[i] === ESC) {
        const m = /^\[(\d*)([A-Za-z])/.exec(s.slice(i + 1));
        assert.ok(m, `bad escape at ${JSON.stringify(s.slice(i, i + 8))}`);
        if (m[2] === "K" && m[1] === "2") this.lines[this.row] = "";
        else if (m[2] === "A") {
          this.row -= Number(m[1] || 1);
          const top = Math.max(0, this.lines.length - this.rows);
          assert.ok(this.row >= top, `cursor moved to line ${this.row}, above the screen's top ${top}`);
        } else assert.fail(`unexpected escape ${JSON.stringify(m[0])}`);
        i += 1 + m[0].length;
      } else {
        let j = i;
        while (j < s.length && s[j] !== "\n" && s[j] !== ESC) j++;
        this.lines[this.row] = (this.lines[this.row] ?? "") + s.slice(i, j);
        i = j;
      }
    }
  }
  /** The text, without the empty line the cursor rests on. */
  text(): string[] {
    return this.lines.slice(0, this.lines.length - 1);
  }
}

/** A layer's whole life as the library reports it: waiting, bytes, verifying, done, unpacking, done. */
function layerLife(h: ReturnType<typeof harness>, n: number, size: number): void {
  h.ev({ digest: digest(n), kind: "layer", state: "downloading", current: 0, total: size });
  h.tick(500);
  h.ev({ digest: digest(n), kind: "layer", state: "downloading", current: size / 2, total: size });
  h.tick(500);
  h.ev({ digest: digest(n), kind: "layer", state: "verifying", current: size, total: size });
  h.ev({ digest: digest(n), kind: "layer", state: "done", total: size });
  h.ev({ digest: digest(n), kind: "layer", state: "unpacking", total: size });
  h.ev({ digest: digest(n), kind: "layer", state: "done", total: size });
}

describe("pull progress: formatting", () => {
  it("prints sizes and rates in docker's decimal units, three significant digits", () => {
    assert.equal(formatBytes(0), "0B");
    assert.equal(formatBytes(999), "999B");
    assert.equal(formatBytes(1000), "1kB");
    assert.equal(formatBytes(1536), "1.54kB");
    assert.equal(formatBytes(12_345_678), "12.3MB");
    assert.equal(formatBytes(999_499), "999kB");
    assert.equal(formatBytes(999_600), "1MB");
    assert.equal(formatBytes(60_000_000_000), "60GB");
    assert.equal(formatRate(2_500_000), "2.5MB/s");
    assert.equal(shortDigest(`sha256:${"ab".repeat(32)}`), "abababababab");
    assert.equal(shortDigest("not-a-digest"), "not-a-digest");
  });

  it("picks the mode from the stream: tty, plain lines on a pipe, quiet when asked", () => {
    assert.equal(progressModeFor({ isTTY: true }, false), "tty");
    assert.equal(progressModeFor({}, false), "plain");
    assert.equal(progressModeFor({ isTTY: true }, true), "quiet");
  });
});

describe("pull progress: plain lines (a pipe)", () => {
  it("writes one line per blob state change, not per chunk, with size, time and rate", () => {
    const h = harness({ mode: "plain", header: "Pulling img:1" });
    h.ev({ digest: "", kind: "manifest", state: "resolving" });
    h.ev({ digest: digest(1), kind: "manifest", state: "done", total: 500 });
    h.ev({ digest: digest(2), kind: "config", state: "done", total: 300 });
    h.ev({ digest: digest(3), kind: "layer", state: "exists", total: 10 });
    h.ev({ digest: digest(4), kind: "layer", state: "waiting", total: 4_000_000 });
    h.ev({ digest: digest(4), kind: "layer", state: "downloading", current: 0, total: 4_000_000 });
    for (let i = 1; i <= 4; i++) {
      h.tick(250);
      h.ev({ digest: digest(4), kind: "layer", state: "downloading", current: i * 1_000_000, total: 4_000_000 });
    }
    h.ev({ digest: digest(4), kind: "layer", state: "verifying", current: 4_000_000, total: 4_000_000 });
    h.ev({ digest: digest(4), kind: "layer", state: "verifying", current: 4_000_000, total: 4_000_000 });
    h.ev({ digest: digest(4), kind: "layer", state: "done", total: 4_000_000 });
    h.ev({ digest: digest(4), kind: "layer", state: "unpacking", total: 4_000_000 });
    h.ev({ digest: digest(4), kind: "layer", state: "done", total: 4_000_000 });
    assert.equal(
      h.out,
      [
        "Pulling img:1",
        "Resolving 127.0.0.1:5000/t/img:1",
        `manifest ${short(1)}: Done`,
        `config ${short(2)}: Done`,
        `layer ${short(3)}: Already exists`,
        `layer ${short(4)}: Waiting`,
        `layer ${short(4)}: Downloading 4MB`,
        `layer ${short(4)}: Verifying Checksum (4MB in 1.0s, 4MB/s)`,
        `layer ${short(4)}: Download complete`,
        `layer ${short(4)}: Extracting`,
        `layer ${short(4)}: Pull complete`,
        "",
      ].join("\n"),
    );
    assert.ok(!h.out.includes(ESC), "no escape codes on a pipe");
  });

  it("writes nothing at all, header included, when no event comes or when quiet", () => {
    const idle = harness({ mode: "plain", header: "Pulling x" });
    idle.view.finish();
    assert.equal(idle.out, "");
    const quiet = harness({ mode: "quiet", header: "Pulling x" });
    layerLife(quiet, 1, 1000);
    quiet.view.finish();
    assert.equal(quiet.out, "");
  });
});

describe("pull progress: a terminal (lines redrawn in place)", () => {
  it("redraws one line per layer with a bar, bytes/total and rate, and ends with every layer complete", () => {
    const h = harness({ mode: "tty", columns: 100, rows: 40, header: "Pulling img:1" });
    const screen = new Screen(40);
    h.ev({ digest: "", kind: "manifest", state: "resolving" });
    h.ev({ digest: digest(9), kind: "config", state: "done", total: 100 });
    assert.equal(h.out, "", "index, manifest and config get no line of their own on a terminal");
    h.ev({ digest: digest(1), kind: "layer", state: "waiting", total: 2_000_000 });
    h.ev({ digest: digest(2), kind: "layer", state: "waiting", total: 1_000_000 });
    screen.feed(h.take());
    assert.deepEqual(screen.text(), ["Pulling img:1", `${short(1)}: Waiting`, `${short(2)}: Waiting`]);

    h.ev({ digest: digest(1), kind: "layer", state: "downloading", current: 0, total: 2_000_000 });
    h.tick(1000);
    h.ev({ digest: digest(1), kind: "layer", state: "downloading", current: 1_000_000, total: 2_000_000 });
    const frame = h.take();
    assert.ok(frame.startsWith(`${ESC}[2A${ESC}[2K`), "the cursor goes back up over the two lines before redrawing");
    screen.feed(frame);
    const line = screen.text()[1]!;
    assert.match(line, new RegExp(`^${short(1)}: Downloading \\[={25}>\\s{24}\\] 1MB/2MB  1MB/s$`));
    assert.ok(line.length <= 99, "a line never reaches the last column");
    assert.equal(screen.text()[2], `${short(2)}: Waiting`);

    h.tick(1000);
    layerLife(h, 2, 1_000_000);
    h.ev({ digest: digest(1), kind: "layer", state: "verifying", current: 2_000_000, total: 2_000_000 });
    h.ev({ digest: digest(1), kind: "layer", state: "done", total: 2_000_000 });
    h.ev({ digest: digest(1), kind: "layer", state: "unpacking", total: 2_000_000 });
    h.ev({ digest: digest(1), kind: "layer", state: "done", total: 2_000_000 });
    h.view.finish();
    screen.feed(h.take());
    assert.deepEqual(screen.text(), ["Pulling img:1", `${short(1)}: Pull complete`, `${short(2)}: Pull complete`]);
  });

  it("redraws for byte counts at most every 100 ms, for a state change at once", () => {
    const h = harness({ mode: "tty", columns: 80 });
    h.ev({ digest: digest(1), kind: "layer", state: "downloading", current: 0, total: 1000 });
    h.take();
    for (let i = 1; i <= 5; i++) {
      h.tick(10);
      h.ev({ digest: digest(1), kind: "layer", state: "downloading", current: i * 10, total: 1000 });
    }
    assert.equal(h.take(), "", "five chunks within 50 ms: no redraw");
    h.tick(60);
    h.ev({ digest: digest(1), kind: "layer", state: "downloading", current: 60, total: 1000 });
    assert.match(h.take(), /60B\/1kB/);
    h.tick(1);
    h.ev({ digest: digest(1), kind: "layer", state: "verifying", current: 1000, total: 1000 });
    assert.match(h.take(), /Verifying Checksum/);
    h.tick(1);
    h.ev({ digest: digest(1), kind: "layer", state: "verifying", current: 1000, total: 1000 });
    h.view.finish();
    const last = h.take();
    assert.match(last, /Verifying Checksum/, "finish draws what a throttled update held back");
    h.view.finish();
    assert.equal(h.take(), "", "and nothing when nothing changed");
  });

  it("keeps a narrow terminal's lines within its width (no bar when there is no room)", () => {
    const h = harness({ mode: "tty", columns: 40 });
    h.ev({ digest: digest(1), kind: "layer", state: "downloading", current: 0, total: 5_000_000 });
    h.tick(1000);
    h.ev({ digest: digest(1), kind: "layer", state: "downloading", current: 2_500_000, total: 5_000_000 });
    const screen = new Screen(24);
    screen.feed(h.out);
    for (const l of screen.text()) assert.ok(l.length <= 39, `${JSON.stringify(l)} is wider than 39`);
    assert.doesNotMatch(screen.text().at(-1)!, /\[/);
  });

  it("with more layers than rows, never moves above the screen and ends showing every layer's outcome", () => {
    const rows = 10;
    const h = harness({ mode: "tty", columns: 80, rows, header: "Pulling big:1" });
    const screen = new Screen(rows);
    const n = 30;
    for (let i = 1; i <= 4; i++) h.ev({ digest: digest(i), kind: "layer", state: "exists", total: 10 });
    for (let i = 5; i <= n; i++) h.ev({ digest: digest(i), kind: "layer", state: "waiting", total: 1000 });
    screen.feed(h.take());
    assert.match(screen.text().at(-1)!, /^\.\.\. \d+ more layers \(\d+ in progress\)$/);
    // Three at a time, as the library downloads them; unpacked in order.
    for (let i = 5; i <= n; i += 3) {
      for (let j = i; j < Math.min(i + 3, n + 1); j++) h.ev({ digest: digest(j), kind: "layer", state: "downloading", current: 0, total: 1000 });
      screen.feed(h.take());
      for (let j = i; j < Math.min(i + 3, n + 1); j++) layerLife(h, j, 1000);
      screen.feed(h.take());
    }
    h.view.finish();
    screen.feed(h.take());
    const text = screen.text();
    assert.equal(text[0], "Pulling big:1");
    for (let i = 1; i <= n; i++) {
      const lines = text.filter((l) => l.startsWith(short(i)));
      assert.ok(lines.length >= 1, `layer ${i} has no line`);
      assert.equal(lines.at(-1), `${short(i)}: ${i <= 4 ? "Already exists" : "Pull complete"}`);
    }
    assert.ok(
      text.every((l) => !l.startsWith("...")),
      "no summary line is left once all is done",
    );
  });

  it("brings a frozen line back at the bottom when it changes after all (a present layer unpacked again)", () => {
    const h = harness({ mode: "tty", columns: 80, rows: 5 });
    const screen = new Screen(5);
    for (let i = 1; i <= 6; i++) h.ev({ digest: digest(i), kind: "layer", state: "exists", total: 10 });
    screen.feed(h.take());
    h.ev({ digest: digest(1), kind: "layer", state: "unpacking", total: 10 });
    h.ev({ digest: digest(1), kind: "layer", state: "done", total: 10 });
    h.view.finish();
    screen.feed(h.take());
    assert.equal(
      screen
        .text()
        .filter((l) => l.startsWith(short(1)))
        .at(-1),
      `${short(1)}: Pull complete`,
    );
  });
});

describe("pull flags", () => {
  const ctx = contextFrom(parseOptions([], [], "test"));

  it("takes --pull missing|always|never with --image, missing by default", async () => {
    assert.equal(parsePullPolicy("always"), "always");
    assert.throws(
      () => parsePullPolicy("sometimes"),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "--pull",
    );
    const r = await buildRun(["--image", "alpine", "true"], ctx);
    assert.ok(!r.help && r.pull === "missing" && r.quiet === false);
    const never = await buildRun(["--image", "alpine", "--pull", "never", "-q", "true"], ctx);
    assert.ok(!never.help && never.pull === "never" && never.quiet);
    await assert.rejects(buildRun(["--pull", "always", "true"], ctx), (e: unknown) => e instanceof InvalidArgumentError && e.field === "--pull");
  });

  it("collects --insecure-registry from before and after the command, and refuses URLs", () => {
    const outer = contextFrom(parseOptions(["--insecure-registry", "a.lan:5000"], GLOBAL_OPTIONS, "ctrexec"));
    const inner = contextFrom(parseOptions(["--insecure-registry=b.lan", "--insecure-registry", "[::1]:5000"], GLOBAL_OPTIONS, "pull"), outer);
    assert.deepEqual(inner.insecureRegistries, ["a.lan:5000", "b.lan", "[::1]:5000"]);
    for (const bad of ["http://a.lan", "a.lan/v2", "a.lan:port"]) {
      assert.throws(
        () => contextFrom(parseOptions(["--insecure-registry", bad], GLOBAL_OPTIONS, "pull")),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "--insecure-registry",
        bad,
      );
    }
  });

  it("checks --platform", () => {
    assert.equal(parsePlatform("linux/arm64/v8"), "linux/arm64/v8");
    assert.equal(parsePlatform("linux/amd64"), "linux/amd64");
    for (const bad of ["linux", "linux/", "Linux/AMD64", "linux/arm64/v8/x"]) {
      assert.throws(
        () => parsePlatform(bad),
        (e: unknown) => e instanceof InvalidArgumentError && e.field === "--platform",
        bad,
      );
    }
  });
});

describe("pull, login and logout command lines", () => {
  const ctx = contextFrom(parseOptions([], [], "test"));
  const field = (f: string) => (e: unknown) => e instanceof InvalidArgumentError && e.field === f;

  it("a pull ended by ^C or SIGTERM exits 128+n, with its line", () => {
    assert.deepEqual(exitCodeFor(new PullInterrupted("SIGINT")), { code: 130, print: true });
    assert.deepEqual(exitCodeFor(new PullInterrupted("SIGTERM")), { code: 143, print: true });
  });

  it("pull takes exactly one REF", async () => {
    await assert.rejects(pullCommand([], ctx), /requires exactly one REF/);
    await assert.rejects(pullCommand(["a", "b"], ctx), /requires exactly one REF/);
    await assert.rejects(pullCommand(["--platform", "amd64", "a"], ctx), field("--platform"));
  });

  it("login refuses contradictory or incomplete password flags before asking anything", async () => {
    await assert.rejects(loginCommand(["-u", "u", "-p", "x", "--password-stdin", "r.lan"], ctx), field("--password-stdin"));
    await assert.rejects(loginCommand(["--password-stdin", "r.lan"], ctx), field("--username"));
    await assert.rejects(loginCommand(["a.lan", "b.lan"], ctx), /at most one REGISTRY/);
    await assert.rejects(logoutCommand(["a.lan", "b.lan"], ctx), /at most one REGISTRY/);
  });
});

describe("login prompts", () => {
  /** A terminal's input: raw mode recorded, keys pushed by the test. */
  function fakeTerminal() {
    const input = Object.assign(new EventEmitter(), {
      raw: [] as boolean[],
      setRawMode(mode: boolean) {
        this.raw.push(mode);
      },
      setEncoding() {},
      resume() {},
      pause() {},
    });
    let shown = "";
    return { input: input satisfies PromptInput, output: { write: (s: string) => (shown += s) }, shown: () => shown };
  }

  it("reads a password in raw mode without echo: backspace, ^U, Enter; the terminal put back", async () => {
    const t = fakeTerminal();
    const p = readSecret(t.input, t.output, "Password: ");
    t.input.emit("data", "wrong\u0015se");
    t.input.emit("data", "cx\u007fret\r");
    assert.equal(await p, "secret");
    assert.equal(t.shown(), "Password: \n");
    assert.deepEqual(t.input.raw, [true, false]);
    assert.equal(t.input.listenerCount("data"), 0);
  });

  it("cancels on ^C, the terminal put back", async () => {
    const t = fakeTerminal();
    const p = readSecret(t.input, t.output, "Password: ");
    t.input.emit("data", "ab\u0003");
    await assert.rejects(p, CanceledError);
    assert.deepEqual(t.input.raw, [true, false]);
  });

  it("--password-stdin takes stdin without its final newline", async () => {
    assert.equal(await readAll(Readable.from([Buffer.from("pa"), Buffer.from("ss\n")])), "pass");
    assert.equal(await readAll(Readable.from([Buffer.from("pass\r\n")])), "pass");
    assert.equal(await readAll(Readable.from([Buffer.from("two\nlines\n")])), "two\nlines");
  });
});
