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
import { oneLine, send, speaksTls, TransportFailure } from "../../src/registry/http.js";
import { parseReference } from "../../src/registry/reference.js";
import { registryMessage } from "../../src/registry/registry-errors.js";
import { RegistrySession, resolveOptions, unreachable } from "../../src/registry/session.js";
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

/** A port on loopback nothing listens on (as long as no one else takes it meanwhile). */
async function closedPort(): Promise<number> {
  const s = createServer();
  s.listen(0, "127.0.0.1");
  await once(s, "listening");
  const { port } = s.address() as { port: number };
  s.close();
  await once(s, "close");
  return port;
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
    // A certificate error quotes names the server chose.
    assert.equal(oneLine("Host: a. is not in the cert's altnames: DNS:x\u001b[2J\u009by"), "Host: a. is not in the cert's altnames: DNS:x[2Jy");
  });

  it("makes a registry's words printable: one line, no control characters", () => {
    const doc = { errors: [{ code: "DENIED", message: "no\u001b[2J\u0007 \r\n way\u009b" }, { code: "\u0000" }] };
    assert.equal(registryMessage(Buffer.from(JSON.stringify(doc))), "DENIED: no[2J way");
    assert.equal(registryMessage(Buffer.from("\u001b]0;title\u0007<h1>\r\nBad\tGateway\u007f</h1>")), "]0;title<h1> Bad Gateway</h1>");
    assert.equal(registryMessage(Buffer.from(JSON.stringify({ details: "incorrect\u001b[1A password" }))), "incorrect[1A password");
    assert.equal(registryMessage(Buffer.from(JSON.stringify({ error: "invalid_grant", error_description: "expired" }))), "expired");
  });

  it("a connection reset during the TLS handshake is a network failure, unless the host may serve plain HTTP", async () => {
    // A server that resets every connection at once, before any TLS is spoken.
    const server = createServer((socket) => socket.resetAndDestroy());
    server.listen(0, "127.0.0.1");
    await once(server, "listening");
    const { port } = server.address() as { port: number };
    try {
      const attempt = (plainHttpAllowed: boolean) =>
        send(new URL(`https://127.0.0.1:${port}/v2/`), {
          method: "GET",
          headers: {},
          signal: undefined,
          idleTimeoutMs: 30_000,
          caCerts: undefined,
          what: "its API",
          plainHttpAllowed,
        });
      const kind = (e: unknown) => (e instanceof TransportFailure ? `${e.kind} ${e.code}` : String(e));
      // Retried like any dropped connection: one reset must not fail an HTTPS registry with "check that it serves HTTPS".
      assert.equal(await attempt(false).then(String, kind), "connect ECONNRESET");
      // A host that may serve plain HTTP: the reset may be a plain-HTTP server hanging up on the ClientHello.
      assert.equal(await attempt(true).then(String, kind), "tls-protocol ECONNRESET");
    } finally {
      server.close();
    }
  });
});

describe("a registry domain without a port", () => {
  // Ports 443 and 80 cannot be counted on in a test: the session's default ports are moved to ports of the test's.
  function session(domain: string, ports: { "https:": number; "http:": number }): RegistrySession {
    return new RegistrySession(domain, {
      ...resolveOptions({ dockerConfigDir: join(dir, "none"), sleep: noWait, maxAttempts: 2 }),
      defaultPorts: ports,
    });
  }
  const get = (s: RegistrySession) => s.get(manifestPath("x", "t"), { scope: "repository:x:pull", what: "x:t", signal: undefined });

  it("is reached over plain HTTP on the default HTTP port when its host may use plain HTTP and the HTTPS port refuses", async () => {
    const f = await fake();
    f.putImage("x", "t", { layers: ["on port 80"] });
    const s = session("127.0.0.1", { "https:": await closedPort(), "http:": f.registry.port });
    for (let i = 0; i < 2; i++) {
      const res = await get(s);
      assert.equal(res.statusCode, 200);
      res.resume();
    }
    assert.equal(f.requests.length, 2);
    assert.equal(f.registry.clientErrors, 0, "no TLS was tried on the plain HTTP port");
  });

  it("is reached over HTTPS on the default HTTPS port when something listens there", async () => {
    const tlsFake = await fake({ tls: { key: certs.keyPem, cert: certs.certPem } });
    const plain = await fake();
    tlsFake.putImage("x", "t", { layers: ["on port 443"] });
    const s = new RegistrySession("127.0.0.1", {
      ...resolveOptions({ dockerConfigDir: join(dir, "none"), sleep: noWait, caCerts: [certs.caPem] }),
      defaultPorts: { "https:": tlsFake.registry.port, "http:": plain.registry.port },
    });
    const res = await get(s);
    assert.equal(res.statusCode, 200);
    res.resume();
    assert.equal(tlsFake.requests.length, 1);
    assert.equal(plain.requests.length, 0);
  });

  it("a domain with a port that refuses is unreachable: no other port is tried", async () => {
    const f = await fake();
    const port = await closedPort();
    const s = session(`127.0.0.1:${port}`, { "https:": await closedPort(), "http:": f.registry.port });
    await assert.rejects(get(s), (e: unknown) => {
      assert.ok(e instanceof UnavailableError, String(e));
      assert.match(e.message, new RegExp(`^registry 127\\.0\\.0\\.1:${port} unreachable: ECONNREFUSED.*\\(2 attempts\\)`));
      return true;
    });
    assert.equal(f.requests.length, 0);
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
    // The idle timeout also bounds the attempt that must succeed: generous, and a slow machine's extra attempt
    // (one that timed out setting up) changes nothing asserted.
    await client(f.host, "x:t", { idleTimeoutMs: 2_000 }).resolve();
    const remotes = f.requests.map((r) => r.remote);
    assert.ok(remotes.length >= 2, String(remotes.length));
    assert.notEqual(remotes[0], remotes[1], "the stalled connection was still busy");
    const stalled = socketsTo(agentFor("http:", undefined), f.registry.port, "sockets").filter((s) => s.localPort === remotes[0]);
    // Gone already, or closing once the idle timeout passes: the event ends the wait. The bound only turns a
    // connection that is never closed into a failure rather than a hang; it is far beyond the idle timeout.
    for (const s of stalled) if (!s.destroyed) await failAfter(once(s, "close"), 30_000, "the stalled connection was never closed");
    assert.equal(socketsTo(agentFor("http:", undefined), f.registry.port, "sockets").filter((s) => s.localPort === remotes[0]).length, 0);
  });
});

describe("the TLS probe of a registry that may also speak plain HTTP", () => {
  it("says plain for a plain HTTP server, tls for a TLS one whatever its certificate, refused for a closed port", async () => {
    const plainFake = await fake();
    const tlsFake = await fake({ tls: { key: certs.keyPem, cert: certs.certPem } });
    assert.equal(await speaksTls(plainFake.host, 5_000, undefined), "plain");
    // The probe trusts no CA at all: a certificate error is its proof of TLS, and nothing is sent after it.
    assert.equal(await speaksTls(tlsFake.host, 5_000, undefined), "tls");
    assert.equal(tlsFake.requests.length, 0);
    assert.equal(await speaksTls(`127.0.0.1:${await closedPort()}`, 5_000, undefined), "refused");
    const aborted = new AbortController();
    aborted.abort();
    assert.equal(await speaksTls(plainFake.host, 5_000, aborted.signal), undefined);
  });
});
