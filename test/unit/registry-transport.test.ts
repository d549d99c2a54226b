import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import type { Agent } from "node:http";
import { connect, createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, afterEach, before, describe, it } from "node:test";
import { CanceledError, UnavailableError } from "../../src/errors.js";
import { agentFor } from "../../src/registry/agents.js";
import { RegistryClient } from "../../src/registry/client.js";
import { oneLine, speaksTls, TransportFailure } from "../../src/registry/http.js";
import { parseReference } from "../../src/registry/reference.js";
import { unreachable } from "../../src/registry/session.js";
import type { RegistryOptions } from "../../src/registry/types.js";
import { blobPath, FakeRegistry, makeTestCertificates, manifestPath, type TestCertificates } from "../helpers/fake-registry.js";

let dir: string;
let certs: TestCertificates;
let fakes: FakeRegistry[] = [];

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "ctrexec-registry-transport-"));
  certs = await makeTestCertificates(dir);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(async () => {
  await Promise.all(fakes.map((f) => f.close()));
  fakes = [];
});

async function fake(options: Parameters<typeof FakeRegistry.start>[0] = {}): Promise<FakeRegistry> {
  const f = await FakeRegistry.start(options);
  fakes.push(f);
  return f;
}

const noWait: NonNullable<RegistryOptions["sleep"]> = async (_ms, signal) => {
  if (signal?.aborted) throw new CanceledError("canceled");
};

function client(host: string, ref: string, options: RegistryOptions = {}): RegistryClient {
  // An empty config dir: no test reads the credentials of whoever runs it.
  return new RegistryClient(parseReference(`${host}/${ref}`), { dockerConfigDir: join(dir, "none"), sleep: noWait, ...options });
}

/**
 * A TCP server on loopback that accepts connections and never says anything: a TLS handshake to it hangs.
 * `clients()` counts the connections the code under test made; `settle()` makes a connection of the test's own
 * and waits until the server accepted it: loopback accepts in order, so any connection the code had started by
 * then has been counted.
 */
async function silentServer(): Promise<{
  host: string;
  clients: () => number;
  connection: () => Promise<void>;
  settle: () => Promise<void>;
  close: () => Promise<void>;
}> {
  const sockets: Socket[] = [];
  const markers = new Set<number>();
  const server: Server = createServer((s) => {
    sockets.push(s);
    s.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  const own: Socket[] = [];
  return {
    host: `127.0.0.1:${port}`,
    clients: () => sockets.filter((s) => !markers.has(s.remotePort ?? 0)).length,
    connection: async () => {
      await once(server, "connection");
    },
    settle: async () => {
      // Whatever the code under test had queued (ticks, microtasks) runs first.
      await new Promise((resolve) => setImmediate(resolve));
      const marker = connect(port, "127.0.0.1");
      marker.on("error", () => {});
      own.push(marker);
      await once(marker, "connect");
      markers.add(marker.localPort ?? 0);
      while (!sockets.some((s) => s.remotePort === marker.localPort)) await once(server, "connection");
    },
    close: async () => {
      for (const s of [...sockets, ...own]) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** The agent's sockets (idle or busy) connected to `port`. */
function socketsTo(agent: Agent, port: number, which: "freeSockets" | "sockets"): Socket[] {
  return Object.values(agent[which])
    .flat()
    .filter((s): s is Socket => s !== undefined && s.remotePort === port);
}

async function failAfter<T>(promise: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  try {
    return await Promise.race([promise, bound]);
  } finally {
    clearTimeout(timer);
  }
}

function listenerTotal(s: Socket): number {
  return s.eventNames().reduce((n, e) => n + s.listenerCount(e), 0);
}

describe("registry session: one scheme decision, shared by concurrent requests", () => {
  it("concurrent first requests to a plain-HTTP loopback registry all succeed, after one TLS attempt", async () => {
    const f = await fake();
    const img = f.putImage("x", "t", { layers: ["over http"] });
    const c = client(f.host, "x:t");
    const results = await Promise.allSettled([c.resolve(), c.resolve(), c.fetchBlobBytes(img.configs[0]!), c.resolve()]);
    assert.deepEqual(
      results.filter((r) => r.status === "rejected").map((r) => String(r.reason)),
      [],
    );
    assert.equal(f.registry.clientErrors, 1, "one TLS attempt for the session");
    assert.equal(f.requests.length, 4, "every request then went over plain HTTP");
  });

  it("concurrent first requests to a TLS registry all go over HTTPS once its handshake completes", async () => {
    const f = await fake({ tls: { key: certs.keyPem, cert: certs.certPem } });
    f.putImage("x", "t", { layers: ["over tls"] });
    const c = client(f.host, "x:t", { caCerts: [certs.caPem] });
    await Promise.all([c.resolve(), c.resolve(), c.resolve()]);
    assert.equal(f.requests.length, 3);
    // One handshake fails: the probe's, which trusts no CA and only learns that the registry speaks TLS.
    assert.equal(f.registry.clientErrors, 1);
  });

  it("requests waiting for the TLS attempt can be canceled, and go on when the attempt itself is canceled", async () => {
    const silent = await silentServer();
    try {
      const c = client(silent.host, "x:t");
      const first = new AbortController();
      const waiting = new AbortController();
      const second = new AbortController();
      const connected = silent.connection();
      const probing = c.resolve(first.signal);
      await connected;
      const canceledWhileWaiting = c.resolve(waiting.signal);
      const next = c.resolve(second.signal);
      waiting.abort();
      await assert.rejects(canceledWhileWaiting, CanceledError);
      await silent.settle();
      assert.equal(silent.clients(), 1, "requests that started during the TLS attempt wait for it");
      // The attempt is canceled: it settled nothing, so the waiting request makes its own.
      const reconnected = silent.connection();
      first.abort();
      await assert.rejects(probing, CanceledError);
      await reconnected;
      await silent.settle();
      assert.equal(silent.clients(), 2);
      second.abort();
      await assert.rejects(next, CanceledError);
    } finally {
      await silent.close();
    }
  });
});

describe("registry transport errors", () => {
  it("a TLS failure at a host a redirect names is one line, naming that host and no --insecure-registry", async () => {
    const f = await fake();
    const layer = f.putBlob("x", "layer bytes");
    // The blob store serves plain HTTP: an https:// redirect to it fails the handshake.
    f.on(blobPath("x", layer.digest), { kind: "redirect-to", location: `https://${f.blobStore.host}/blob/x/${layer.digest}` });
    await assert.rejects(client(f.host, "x:t").fetchBlob(layer), (e: unknown) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.doesNotMatch(e.message, /\n/);
      assert.match(
        e.message,
        new RegExp(`^${f.blobStore.host} unreachable: TLS handshake failed \\(EPROTO: wrong version number\\): check that it serves HTTPS$`),
      );
      return true;
    });
  });

  it("advises --insecure-registry once, and only for a registry not yet allowed plain HTTP", () => {
    const failure = new TransportFailure("tls-protocol", "TLS handshake failed (EPROTO: wrong version number)", "EPROTO");
    const remote = unreachable("registry registry.lan:5000", failure, 1, "registry.lan:5000").message;
    assert.equal(remote.split("--insecure-registry").length, 2, remote);
    assert.equal(remote.split("plain HTTP").length, 2, remote);
    assert.match(remote, /if it serves plain HTTP and is trusted, add it with --insecure-registry registry.lan:5000$/);
    const hop = unreachable("blobs.example.com", failure, 1, undefined).message;
    assert.doesNotMatch(hop, /insecure-registry/);
  });

  it("reduces OpenSSL's multi-line messages to their reason", () => {
    const raw =
      "write EPROTO 805CEE15D27F0000:error:0A00010B:SSL routines:ssl3_get_record:wrong version number:../deps/openssl/openssl/ssl/record/ssl3_record.c:350:\n";
    assert.equal(oneLine(raw), "wrong version number");
    assert.equal(oneLine("connect ECONNREFUSED 127.0.0.1:1\nmore"), "connect ECONNREFUSED 127.0.0.1:1");
  });
});

describe("registry connections", () => {
  for (const tls of [false, true]) {
    it(`50 sequential requests over one kept-alive ${tls ? "HTTPS" : "HTTP"} connection add no listeners to it`, async () => {
      const f = await fake(tls ? { tls: { key: certs.keyPem, cert: certs.certPem } } : {});
      f.putImage("x", "t", { layers: ["a"] });
      const caCerts = tls ? [certs.caPem] : undefined;
      const agent = agentFor(tls ? "https:" : "http:", caCerts);
      const warnings: Error[] = [];
      const onWarning = (w: Error) => warnings.push(w);
      process.on("warning", onWarning);
      try {
        const c = client(f.host, "x:t", caCerts ? { caCerts } : {});
        const counts: number[] = [];
        for (let i = 0; i < 50; i++) {
          await c.resolve();
          const idle = socketsTo(agent, f.registry.port, "freeSockets");
          assert.equal(idle.length, 1, `request ${i + 1}: one idle connection`);
          counts.push(listenerTotal(idle[0]!));
        }
        // Warnings are emitted on the next tick.
        await new Promise((resolve) => setImmediate(resolve));
        assert.deepEqual(
          warnings.map((w) => `${w.name}: ${w.message}`),
          [],
        );
        assert.equal(new Set(f.requests.map((r) => r.remote)).size, 1, "one connection");
        assert.deepEqual(new Set(counts), new Set([counts[0]]), `listeners on the connection after each request: ${counts.join(",")}`);
      } finally {
        process.off("warning", onWarning);
      }
    });
  }

  it("reads a 503's body so that its connection is freed for reuse", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 503 }, 1);
    const agent = agentFor("http:", undefined);
    const freed = new Set<number>();
    const onFree = (s: Socket) => {
      if (s.remotePort === f.registry.port) freed.add(s.localPort ?? 0);
    };
    agent.on("free", onFree);
    try {
      await client(f.host, "x:t").resolve();
      const first = f.requests[0]!.remote;
      // The retry does not wait for the body: the connection may carry it, or be freed a moment later.
      while (!freed.has(first)) await failAfter(once(agent, "free"), 30_000, "the 503's connection was never freed");
    } finally {
      agent.off("free", onFree);
    }
  });

  it("closes the connection of a 503 whose body never comes, after the idle timeout, and retries on another", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["a"] });
    f.on(manifestPath("x", "t"), { kind: "status", status: 503, body: "unavailable", stallBody: true }, 1);
    await client(f.host, "x:t", { idleTimeoutMs: 1000 }).resolve();
    const remotes = f.requests.map((r) => r.remote);
    assert.equal(remotes.length, 2);
    assert.notEqual(remotes[0], remotes[1], "the stalled connection was still busy");
    const stalled = socketsTo(agentFor("http:", undefined), f.registry.port, "sockets").filter((s) => s.localPort === remotes[0]);
    // Gone already, or closing once the idle timeout passes: the event ends the wait. The bound only turns a
    // connection that is never closed into a failure rather than a hang; it is far beyond the idle timeout.
    for (const s of stalled) if (!s.destroyed) await failAfter(once(s, "close"), 30_000, "the stalled connection was never closed");
    assert.equal(socketsTo(agentFor("http:", undefined), f.registry.port, "sockets").filter((s) => s.localPort === remotes[0]).length, 0);
  });
});

describe("the TLS probe of a registry that may also speak plain HTTP", () => {
  it("says false for a plain HTTP server, true for a TLS one whatever its certificate, nothing for a closed port", async () => {
    const plainFake = await fake();
    const tlsFake = await fake({ tls: { key: certs.keyPem, cert: certs.certPem } });
    assert.equal(await speaksTls(plainFake.host, 5_000, undefined), false);
    // The probe trusts no CA at all: a certificate error is its proof of TLS, and nothing is sent after it.
    assert.equal(await speaksTls(tlsFake.host, 5_000, undefined), true);
    assert.equal(tlsFake.requests.length, 0);
    const closed = createServer();
    closed.listen(0, "127.0.0.1");
    await once(closed, "listening");
    const port = (closed.address() as { port: number }).port;
    closed.close();
    await once(closed, "close");
    assert.equal(await speaksTls(`127.0.0.1:${port}`, 5_000, undefined), undefined);
    const aborted = new AbortController();
    aborted.abort();
    assert.equal(await speaksTls(plainFake.host, 5_000, aborted.signal), undefined);
  });
});
