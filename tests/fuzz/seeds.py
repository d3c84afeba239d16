#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<target>/ (committed; rerun after changing a
test table). Most seeds are the attack tables of the test suite, read from the test sources
so that they stay in step; the rest are the well-formed inputs each parser exists for.
The fixture they assume (public URL, secrets, routes) is `authgate::fuzzing`'s."""
import base64, hashlib, hmac, json, os, re, shutil, struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
OUT = os.path.join(ROOT, "tests", "fuzz", "corpus")
MAX_PER_TARGET = 60


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as f:
        return f.read()


def rust_strings(text):
    """The contents of the Rust string literals "..." of `text`, escapes resolved."""
    out = []
    for m in re.finditer(r'(?<![a-zA-Z#])"((?:[^"\\\n]|\\.)*)"', text):
        s = m.group(1)
        s = re.sub(r"\\u\{([0-9a-fA-F]+)\}", lambda u: chr(int(u.group(1), 16)), s)
        s = (s.replace("\\\\", "\x01").replace("\\t", "\t").replace("\\n", "\n")
             .replace("\\r", "\r").replace("\\0", "\0").replace('\\"', '"'))
        s = re.sub(r"\\x([0-9a-fA-F]{2})", lambda x: chr(int(x.group(1), 16)), s)
        out.append(s.replace("\x01", "\\"))
    return out


def tests_part(path):
    text = read(path)
    i = text.find("mod tests")
    return text[i:] if i >= 0 else text


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def write(target, seeds):
    d = os.path.join(OUT, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    unique = []
    for s in seeds:
        b = s.encode("utf-8", "surrogateescape") if isinstance(s, str) else s
        if b not in unique:
            unique.append(b)
    for b in unique[:MAX_PER_TARGET]:
        with open(os.path.join(d, hashlib.sha1(b).hexdigest()[:16]), "wb") as f:
            f.write(b)
    print(f"{target}: {min(len(unique), MAX_PER_TARGET)} seeds")


def headers(pairs):
    return b"\n".join(k + b": " + v for k, v in pairs)


# Paths: the unit tests of the normalizer and the raw paths of the request-level tests.
paths = [s for s in rust_strings(tests_part("src/policy/path.rs")) if s.startswith("/") and "{" not in s]
paths += [m.decode("latin-1") for m in re.findall(rb'raw_get\(h\.addr, b"([^"]*)"', read("tests/paths.rs").encode())]
write("path", paths)

# Redirect targets: the redirect tests' hostile table and the unit tests.
redirects = rust_strings(read("tests/redirects.rs").split("const HOSTILE")[1].split("];")[0])
redirects = [r.replace("{public}", "https://app.example.com") for r in redirects]
redirects += [s for s in rust_strings(tests_part("src/redirect.rs")) if "{" not in s]
redirects += ["https://app.example.com/a/b?c=d#f", "https://APP.example.com:443/x", "http://app.example.com/x"]
write("redirect", redirects)

# Forward auth: the trust-boundary table's forwarded headers.
fa = []
for case in re.findall(r"headers: &\[(.*?)\], session", read("tests/trust_boundary.rs")):
    pairs = re.findall(r'\((FM|FU|OU), b"((?:[^"\\]|\\.)*)"\)', case)
    name = {"FM": b"X-Forwarded-Method", "FU": b"X-Forwarded-Uri", "OU": b"X-Original-URI"}
    fa.append(headers([(name[n], rust_strings('"' + v + '"')[0].encode("latin-1")) for n, v in pairs]))
fa += [headers([(b"x-forwarded-method", b"delete"), (b"x-original-uri", b"/x")]),
       headers([(b"X-Forwarded-Method", b"POST"), (b"X-Forwarded-Uri", b"/api/v2/items?x=1")])]
write("forward_auth", fa)

# Cookie headers: the unit tests' cookie lines, ours and others mixed.
cookies = [b"cookie: " + c.encode("latin-1") for c in rust_strings(tests_part("src/headers.rs"))
           if "=" in c and ("authgate" in c or ";" in c)]
cookies += [b"cookie: a=1; authgate_session=xyz; b=2\ncookie: authgate_session=dup",
            b"cookie: authgate_session_login_abc=1; keep=1\ncookie: authgate_session_login=old",
            b"cookie: =x; authgate_session; ;; z=\"q\""]
write("cookie_header", cookies)

# Identity headers: every spelling of the identity and forwarded headers.
ident = [
    headers([(b"X-Forwarded-User", b"mallory"), (b"X_Forwarded_Email", b"m@x"), (b"x.forwarded.groups", b"admin")]),
    headers([(b"Authorization", b"Bearer x"), (b"X-Auth-Tenant", b"t"), (b"x_auth_tenant", b"t")]),
    headers([(b"Connection", b"close, X-Forwarded-User"), (b"X-Forwarded-User", b"a"), (b"Upgrade", b"websocket")]),
    headers([(b"Forwarded", b"for=1.2.3.4"), (b"X-Real-IP", b"1.2.3.4"), (b"X-App-Secret", b"s"), (b"x_app.secret", b"s")]),
    headers([(b"X-Forwarded-Preferred-Username", b"root"), (b"X-Original-URL", b"/admin"), (b"X-HTTP-Method-Override", b"DELETE")]),
    headers([(b"keep-alive", b"timeout=5"), (b"te", b"trailers"), (b"x-kept", b"yes"), (b"connection", b"keep-alive, x-secret")]),
]
write("identity_headers", ident)

# Session cookies: valid ones under the fixture's secrets, damaged ones, login cookie plaintexts.
key_a, key_b = b"\x01" * 32, b"\x02" * 32
sc = []
for key, sid in [(key_a, bytes(range(16))), (key_b, b"\xff" * 16), (key_a, b"\0" * 16)]:
    mac = hmac.new(key, b"authgate session v1\0" + sid, hashlib.sha256).digest()
    good = b64(sid) + b"." + b64(mac)
    sc += [good, good[:-1] + b"A", good.replace(b".", b"")]
def login_plain(state, nonce, verifier, landing):
    out = struct.pack(">Q", 1_700_000_000_000)
    for f in (state, nonce, verifier):
        out += bytes([len(f)]) + f
    return out + landing
sc += [login_plain(b"st", b"no", b"pkce", b"/a/b?c=d"), login_plain(b"", b"", b"", b"//evil.example"),
       login_plain(b"s" * 43, b"n" * 43, b"v" * 43, b"https://app.example.com/x")]
write("session_cookie", sc)

# Configuration: the shipped file, the test configurations, environment overrides.
base = read("gateway.toml").split("\n")
shipped = "\n".join(l for l in base if not l.lstrip().startswith("#"))
minimal = """[server]\npublic_url = "https://app.example.com"\n[upstream]\nurl = "http://127.0.0.1:8080"\n[oidc]\nissuer = "https://idp.example.com"\nclient_id = "c"\nclient_secret = "s"\n[session]\ncookie_secrets = ["AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE="]\n"""
cfg = [shipped + "\0AUTHGATE_OIDC__CLIENT_SECRET=x\nAUTHGATE_SESSION__COOKIE_SECRETS=[AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=]",
       minimal, minimal + "\0AUTHGATE_SERVER__TRUSTED_PROXIES=10.0.0.0/8,::1\nAUTHGATE_SESSION__STORE=redis\nAUTHGATE_SESSION__REDIS_URL=redis://r:6379",
       minimal + '[[route]]\npath = "^/a/[0-9]+$"\nmatch = "regex"\nmethods = ["get"]\nrequire_claims = { tenant = ["x"] }\n',
       minimal + '[headers]\nclaims = { "X-Tenant" = "tenant", "Bad Name" = "x" }\n[[route]]\npath = "admin"\npolicy = "nope"\n',
       minimal + "[session]\nidle_timeout = \"9999999999999d\"\nmax_sessions = -1\n",
       "\0AUTHGATE_SERVER__PUBLIC_URL=https://a\nAUTHGATE_OIDC__SCOPES=openid,email"]
for block in re.findall(r'r#"(.*?)"#', read("tests/config.rs"), re.S)[:30]:
    cfg.append(block if block.lstrip().startswith("[") else minimal + block)
write("config", cfg)

# JWTs: shapes the verifier refuses for each reason, and a logout form.
def jwt(header, claims, sig=b"c2ln"):
    return b64(json.dumps(header).encode()) + b"." + b64(json.dumps(claims).encode()) + b"." + sig
claims = {"iss": "https://idp.example.com", "aud": "the-client", "iat": 1_800_000_000, "jti": "j",
          "events": {"http://schemas.openid.net/event/backchannel-logout": {}}, "sid": "s"}
jw = [jwt({"alg": "RS256", "kid": "k1"}, claims), jwt({"alg": "none"}, claims, b""),
      jwt({"alg": "HS256", "kid": "k1"}, claims), jwt({"alg": "ES256", "kid": "k2", "crit": ["x"]}, claims),
      jwt({"alg": "RS256", "kid": "other"}, claims), jwt({"alg": "ES256"}, claims), b"a.b.c.d", b"..",
      b"logout_token=" + jwt({"alg": "RS256", "kid": "k1"}, claims) + b"&x=1"]
write("jwt", jw)

# Claims: header NUL claims, from the claim checks' unit tests.
access = {"iss": "https://idp.example.com", "aud": ["x", "api"], "exp": 1_800_000_000}
jc = []
for header, c in [({"alg": "RS256"}, access), ({"typ": "at+jwt"}, dict(access, nbf=1_800_000_000)),
                  ({"typ": "application/JWT"}, dict(access, nonce="n")), ({"typ": 7}, access),
                  ({}, claims), ({}, dict(claims, nonce="n")), ({}, dict(claims, sid=["x"], sub=None)),
                  ({}, dict(claims, events=["http://schemas.openid.net/event/backchannel-logout"])),
                  ({}, dict(claims, iat=1.5)), ({}, dict(claims, exp=18446744073709551615)),
                  ({}, dict(claims, aud=["the-client", "x"], jti=""))]:
    jc.append(json.dumps(header).encode() + b"\0" + json.dumps(c).encode())
write("jwt_claims", jc)

# Redis records: the codec's unit test record and variants of it.
record = "".join(re.findall(r'r#"(.*?)"#', read("src/session/redis/codec.rs").split("const RECORD")[1].split(");")[0]))
rr = [record, record.replace('"backoff":[2,50]', '"backoff":[0,99999999999]'),
      record.replace('"more":[null,["at-b",7]]', '"more":[]'), record.replace('"x-forwarded-email"', '"bad name"'),
      record.replace('"at":"at-1"', '"at":"a\\r\\nb"'), "{}", '{"at":""}']
write("redis_record", rr)
