import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { parseChallenges } from "../../src/registry/challenge.js";
import { backoffMs, retryAfterMs } from "../../src/registry/retry.js";
import { TokenCache } from "../../src/registry/tokens.js";

describe("WWW-Authenticate parsing", () => {
  it("reads a registry's Bearer challenge", () => {
    assert.deepEqual(
      parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"'),
      [
        {
          scheme: "bearer",
          params: { realm: "https://auth.docker.io/token", service: "registry.docker.io", scope: "repository:library/alpine:pull" },
        },
      ],
    );
  });

  it("reads several challenges in one header, token and quoted values, odd spacing and case", () => {
    const got = parseChallenges('Basic realm="reg", BEARER Realm = "https://t/x?a=1,2" , Service=svc,error="invalid_token",  Negotiate');
    assert.deepEqual(got, [
      { scheme: "basic", params: { realm: "reg" } },
      { scheme: "bearer", params: { realm: "https://t/x?a=1,2", service: "svc", error: "invalid_token" } },
      { scheme: "negotiate", params: {} },
    ]);
  });

  it("reads escapes in quoted strings and a space-separated scope list", () => {
    const [c] = parseChallenges('Bearer realm="a\\"b\\\\c",scope="repository:a:pull repository:b:pull"');
    assert.equal(c?.params["realm"], 'a"b\\c');
    assert.equal(c?.params["scope"], "repository:a:pull repository:b:pull");
  });

  it("reads token68 forms and tells them from parameters", () => {
    assert.deepEqual(parseChallenges("Negotiate abc+/def==, Basic realm=x"), [
      { scheme: "negotiate", params: {}, token68: "abc+/def==" },
      { scheme: "basic", params: { realm: "x" } },
    ]);
  });

  it("takes header arrays, ignores garbage and never lets a parameter reach the prototype", () => {
    const got = parseChallenges(["Basic realm=a", '=junk, Bearer realm="r",__proto__="x",realm="second"']);
    assert.equal(got.length, 2);
    assert.equal(got[1]?.params["realm"], "r", "the first of a repeated parameter wins");
    assert.equal(Object.getPrototypeOf(got[1]?.params), Object.prototype);
    assert.deepEqual(parseChallenges(undefined), []);
    assert.deepEqual(parseChallenges(""), []);
    assert.deepEqual(parseChallenges('Bearer realm="unterminated'), [{ scheme: "bearer", params: { realm: "unterminated" } }]);
  });
});

describe("retry timing", () => {
  it("reads Retry-After as seconds or as an HTTP date", () => {
    assert.equal(retryAfterMs("3"), 3000);
    assert.equal(retryAfterMs(" 0 "), 0);
    const now = Date.parse("2026-01-01T00:00:00Z");
    assert.equal(retryAfterMs("Thu, 01 Jan 2026 00:00:05 GMT", now), 5000);
    assert.equal(retryAfterMs("Wed, 31 Dec 2025 00:00:00 GMT", now), 0, "a date in the past means now");
    assert.equal(retryAfterMs("soon"), undefined);
    assert.equal(retryAfterMs(undefined), undefined);
  });

  it("backs off exponentially with jitter, capped", () => {
    for (let i = 0; i < 50; i++) {
      const a = backoffMs(1);
      const c = backoffMs(3);
      const z = backoffMs(30);
      assert.ok(a >= 125 && a <= 250, `attempt 1: ${a}`);
      assert.ok(c >= 500 && c <= 1000, `attempt 3: ${c}`);
      assert.ok(z >= 2000 && z <= 4000, `attempt 30: ${z}`);
    }
  });
});

describe("TokenCache", () => {
  const anon = TokenCache.key("https://auth/token", "svc", ["repository:a:pull"], undefined);

  it("keeps a token for its lifetime minus a margin", () => {
    let now = 1_000_000;
    const cache = new TokenCache(() => now);
    cache.set(anon, "t1", 300);
    now += 289_999;
    assert.equal(cache.get(anon), "t1");
    now += 1;
    assert.equal(cache.get(anon), undefined, "dropped 10 s before it expires");
  });

  it("gives a token without expires_in the spec's 60 s, and a very short one half its life", () => {
    let now = 0;
    const cache = new TokenCache(() => now);
    cache.set(anon, "t", undefined);
    now = 49_999;
    assert.equal(cache.get(anon), "t");
    now = 50_000;
    assert.equal(cache.get(anon), undefined);
    cache.set(anon, "short", 4);
    now += 1_999;
    assert.equal(cache.get(anon), "short");
    now += 1;
    assert.equal(cache.get(anon), undefined);
  });

  it("keys by realm, service, scope set and credentials, never holding a password in clear", () => {
    const a = TokenCache.key("r", "s", ["x", "y"], { username: "u", password: "secret-pw" });
    assert.equal(a, TokenCache.key("r", "s", ["y", "x"], { username: "u", password: "secret-pw" }), "scope order does not matter");
    assert.notEqual(a, TokenCache.key("r", "s", ["x", "y"], { username: "u", password: "other" }));
    assert.notEqual(a, TokenCache.key("r", "s", ["x", "y"], undefined));
    assert.notEqual(a, TokenCache.key("r", "s", ["x"], { username: "u", password: "secret-pw" }));
    assert.notEqual(a, TokenCache.key("r", "s2", ["x", "y"], { username: "u", password: "secret-pw" }));
    assert.ok(!a.includes("secret-pw"));
  });

  it("shares one fetch among concurrent askers, and invalidates only the token that was refused", async () => {
    const cache = new TokenCache(() => 0);
    let fetches = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const fetch = async () => {
      fetches++;
      await gate;
      return { token: `t${fetches}`, expiresIn: 60 };
    };
    const all = Promise.all([cache.obtain(anon, fetch), cache.obtain(anon, fetch), cache.obtain(anon, fetch)]);
    release();
    assert.deepEqual(await all, ["t1", "t1", "t1"]);
    assert.equal(fetches, 1);
    cache.invalidate(anon, "stale");
    assert.equal(cache.get(anon), "t1", "a refusal of an older token leaves the newer one");
    cache.invalidate(anon, "t1");
    assert.equal(await cache.obtain(anon, fetch), "t2");
  });

  it("does not cache a failed fetch", async () => {
    const cache = new TokenCache(() => 0);
    await assert.rejects(
      cache.obtain(anon, async () => {
        throw new Error("token service down");
      }),
      /down/,
    );
    assert.equal(await cache.obtain(anon, async () => ({ token: "ok", expiresIn: undefined })), "ok");
  });
});
