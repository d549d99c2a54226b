import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { InvalidArgumentError } from "../../src/errors.js";
import { configKeyFor, configKeyMatches, isLoopbackHost, normalizeRegistryHost, plainHttpAllowed } from "../../src/registry/hosts.js";
import { parseReference } from "../../src/registry/reference.js";

const HEX = "a".repeat(64);
const D = `sha256:${HEX}`;

describe("parseReference (docker's normalization)", () => {
  const good: [string, { domain: string; repository: string; tag?: string; digest?: string; name: string }][] = [
    ["alpine", { domain: "docker.io", repository: "library/alpine", tag: "latest", name: "docker.io/library/alpine:latest" }],
    ["alpine:3.19", { domain: "docker.io", repository: "library/alpine", tag: "3.19", name: "docker.io/library/alpine:3.19" }],
    ["library/alpine", { domain: "docker.io", repository: "library/alpine", tag: "latest", name: "docker.io/library/alpine:latest" }],
    ["docker.io/alpine", { domain: "docker.io", repository: "library/alpine", tag: "latest", name: "docker.io/library/alpine:latest" }],
    ["docker.io/library/alpine:edge", { domain: "docker.io", repository: "library/alpine", tag: "edge", name: "docker.io/library/alpine:edge" }],
    ["index.docker.io/alpine", { domain: "docker.io", repository: "library/alpine", tag: "latest", name: "docker.io/library/alpine:latest" }],
    ["index.docker.io/user/app:1", { domain: "docker.io", repository: "user/app", tag: "1", name: "docker.io/user/app:1" }],
    ["user/repo", { domain: "docker.io", repository: "user/repo", tag: "latest", name: "docker.io/user/repo:latest" }],
    ["user/repo/sub", { domain: "docker.io", repository: "user/repo/sub", tag: "latest", name: "docker.io/user/repo/sub:latest" }],
    // Not an alias of Docker Hub's name: kept as written, as docker does.
    [
      "registry-1.docker.io/alpine",
      { domain: "registry-1.docker.io", repository: "alpine", tag: "latest", name: "registry-1.docker.io/alpine:latest" },
    ],
    ["localhost/foo", { domain: "localhost", repository: "foo", tag: "latest", name: "localhost/foo:latest" }],
    ["localhost:5000/foo/bar:t", { domain: "localhost:5000", repository: "foo/bar", tag: "t", name: "localhost:5000/foo/bar:t" }],
    ["127.0.0.1:5000/x", { domain: "127.0.0.1:5000", repository: "x", tag: "latest", name: "127.0.0.1:5000/x:latest" }],
    ["[::1]:5000/foo", { domain: "[::1]:5000", repository: "foo", tag: "latest", name: "[::1]:5000/foo:latest" }],
    ["[2001:db8::1]/foo", { domain: "[2001:db8::1]", repository: "foo", tag: "latest", name: "[2001:db8::1]/foo:latest" }],
    ["example.com/a/b", { domain: "example.com", repository: "a/b", tag: "latest", name: "example.com/a/b:latest" }],
    ["Example.COM/a", { domain: "Example.COM", repository: "a", tag: "latest", name: "Example.COM/a:latest" }],
    // An upper-case first component can only be a host (distribution/reference >= 0.6).
    ["Foo/bar", { domain: "Foo", repository: "bar", tag: "latest", name: "Foo/bar:latest" }],
    ["dockerhost/bar", { domain: "docker.io", repository: "dockerhost/bar", tag: "latest", name: "docker.io/dockerhost/bar:latest" }],
    // No slash: never a host, so ":5000" is a tag.
    ["foo:5000", { domain: "docker.io", repository: "library/foo", tag: "5000", name: "docker.io/library/foo:5000" }],
    [`example.com/a/b@${D}`, { domain: "example.com", repository: "a/b", digest: D, name: `example.com/a/b@${D}` }],
    [`alpine@${D}`, { domain: "docker.io", repository: "library/alpine", digest: D, name: `docker.io/library/alpine@${D}` }],
    [`h:5000/x:t@${D}`, { domain: "h:5000", repository: "x", tag: "t", digest: D, name: `h:5000/x:t@${D}` }],
    [
      `x@sha512:${"b".repeat(128)}`,
      { domain: "docker.io", repository: "library/x", digest: `sha512:${"b".repeat(128)}`, name: `docker.io/library/x@sha512:${"b".repeat(128)}` },
    ],
    ["a.b/c_d.e__f-g---h", { domain: "a.b", repository: "c_d.e__f-g---h", tag: "latest", name: "a.b/c_d.e__f-g---h:latest" }],
    ["x:_Tag.1-A", { domain: "docker.io", repository: "library/x", tag: "_Tag.1-A", name: "docker.io/library/x:_Tag.1-A" }],
    [`x:${"t".repeat(128)}`, { domain: "docker.io", repository: "library/x", tag: "t".repeat(128), name: `docker.io/library/x:${"t".repeat(128)}` }],
    ["0/1", { domain: "docker.io", repository: "0/1", tag: "latest", name: "docker.io/0/1:latest" }],
  ];
  for (const [input, want] of good) {
    it(`parses ${input.length > 60 ? `${input.slice(0, 60)}…` : input}`, () => {
      assert.deepEqual({ ...parseReference(input) }, want);
    });
  }

  const bad: [string, RegExp][] = [
    ["127.0.0.1:99999/foo", /port 99999 of 127\.0\.0\.1:99999 is not 1 to 65535/],
    ["localhost:0/foo", /port 0 of localhost:0 is not 1 to 65535/],
    ["", /empty/],
    ["Alpine", /lowercase \(library\/alpine\)/],
    ["example.com/Foo", /lowercase \(foo\)/],
    ["example.com/foo/Bar:t", /lowercase/],
    [HEX, /image ID/],
    ["alpine:", /tag/],
    ["alpine:-x", /tag/],
    ["alpine:.x", /tag/],
    [`alpine:${"t".repeat(129)}`, /tag/],
    ["alpine:latest:x", /tag|repository/],
    ["foo_-bar", /repository name/],
    ["foo___bar", /repository name/],
    ["foo..bar", /repository name/],
    ["-foo", /repository name/],
    ["foo-", /repository name/],
    ["foo//bar", /repository name/],
    ["foo/", /repository name/],
    ["foo bar", /repository name|tag/],
    ["alpine@sha256:abc", /digest/],
    [`alpine@sha256:${"A".repeat(64)}`, /digest/],
    [`alpine@md5:${"a".repeat(32)}`, /unsupported digest algorithm md5/],
    ["alpine@", /digest/],
    ["http://example.com/foo", /registry host|repository/],
    ["example.com:port/foo", /not a valid registry host/],
    ["-bad.com/foo", /not a valid registry host/],
    [`example.com/${"a/".repeat(130)}b`, /longer than 255/],
    ["x".repeat(2000), /longer than any valid reference/],
  ];
  for (const [input, why] of bad) {
    it(`refuses ${JSON.stringify(input.length > 40 ? `${input.slice(0, 40)}…` : input)}`, () => {
      assert.throws(
        () => parseReference(input),
        (err: unknown) => err instanceof InvalidArgumentError && err.field === "ref" && why.test(err.message),
      );
    });
  }
});

describe("registry hosts", () => {
  it("knows loopback by its literal name only", () => {
    for (const h of ["127.0.0.1", "127.1.2.3", "127.255.255.255", "localhost", "LOCALHOST", "::1"]) assert.ok(isLoopbackHost(h), h);
    for (const h of ["128.0.0.1", "127.0.0.256", "localhost.example.com", "10.0.0.1", "127.0.0", "::2", "example.com"])
      assert.ok(!isLoopbackHost(h), h);
  });

  it("allows plain HTTP for loopback and listed hosts only", () => {
    assert.ok(plainHttpAllowed("127.0.0.1:5000", []));
    assert.ok(plainHttpAllowed("localhost:5000", undefined));
    assert.ok(plainHttpAllowed("[::1]:5000", []));
    assert.ok(!plainHttpAllowed("reg.example:5000", []));
    assert.ok(plainHttpAllowed("reg.example:5000", ["reg.example:5000"]));
    assert.ok(plainHttpAllowed("reg.example:5000", ["reg.example"]), "a host without port covers every port");
    assert.ok(plainHttpAllowed("reg.example:5000", ["http://Reg.Example:5000/"]), "scheme, case and slash are forgiven");
    assert.ok(!plainHttpAllowed("reg.example:5001", ["reg.example:5000"]));
    assert.ok(!plainHttpAllowed("reg.example", ["reg.example:5000"]));
    assert.ok(!plainHttpAllowed("other.example", ["reg.example"]));
  });

  it("normalizes login hosts, Docker Hub's aliases to docker.io", () => {
    for (const h of ["docker.io", "index.docker.io", "registry-1.docker.io", "https://index.docker.io/v1/", "https://registry-1.docker.io"]) {
      assert.equal(normalizeRegistryHost(h), "docker.io", h);
    }
    assert.equal(normalizeRegistryHost("https://reg.example:5000/"), "reg.example:5000");
    assert.equal(normalizeRegistryHost("127.0.0.1:5000"), "127.0.0.1:5000");
    assert.throws(
      () => normalizeRegistryHost("not a host"),
      (e: unknown) => e instanceof InvalidArgumentError && e.field === "registry",
    );
    assert.throws(() => normalizeRegistryHost(""), InvalidArgumentError);
  });

  it("matches config.json keys as docker does", () => {
    assert.equal(configKeyFor("docker.io"), "https://index.docker.io/v1/");
    assert.equal(configKeyFor("reg.example:5000"), "reg.example:5000");
    for (const k of ["https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io", "https://index.docker.io"]) {
      assert.ok(configKeyMatches(k, "docker.io"), k);
    }
    assert.ok(configKeyMatches("https://reg.example:5000", "reg.example:5000"));
    assert.ok(configKeyMatches("http://reg.example:5000/v2/", "reg.example:5000"));
    assert.ok(!configKeyMatches("reg.example", "reg.example:5000"));
    assert.ok(!configKeyMatches("docker.io", "reg.example"));
  });
});
