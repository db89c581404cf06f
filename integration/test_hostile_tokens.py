"""Attacks on the bearer token, through real Envoy (2 workers). Every attack must be refused with 401
`invalid_token` and counted (`mcp_authz.denied` and `mcp_authz.denied.<reason>` move by exactly one),
nothing may reach the upstream, and nothing may be fetched from a URL the token names. The last tests
check that the attacks left the filter as they found it: no VM crashed or reloaded, every algorithm still
verifies, and the tokens with unknown `kid`s caused at most one extra JWKS fetch.

Tokens whose refusal must come from their content are correctly signed by a trusted key
(`harness.keys.sign_raw`), so that a refusal can never be explained by the signature alone."""

from __future__ import annotations

import base64
import datetime
import json
import re
import time
from typing import Callable

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from conftest import shared_stack
from harness.keys import (
    ALGORITHMS,
    AUDIENCE,
    ISSUER,
    OMIT,
    b64url,
    b64url_json,
    claims,
    hmac_token,
    make_key,
    mint,
    raw_token,
    sign_raw,
)
from harness.servers import EchoServer, JwksServer

MAX_TOKEN_BYTES = 8192  # the test contract's providers[0].max_token_bytes (harness.envoy.filter_config)

# error_description per counter reason (docs/configuration.md, "Answers to the client").
DESCRIPTIONS = {
    "malformed": "malformed token", "too_large": "token too large", "encrypted": "encrypted tokens are not accepted",
    "alg_not_allowed": "signing algorithm not allowed", "crit_unsupported": "unsupported critical header",
    "issuer_not_allowed": "issuer not accepted", "unknown_kid": "signing key not found",
    "alg_key_mismatch": "algorithm does not match key", "bad_signature": "invalid signature",
    "expired": "token expired", "missing_exp": "token has no expiry", "not_yet_valid": "token not yet valid",
    "issued_in_future": "token issued in the future", "audience_not_allowed": "audience not accepted",
    "bad_claim": "invalid claim",
}


class Attacker:
    """The attacker's keys, a JWKS server publishing them (what a `jku` points at) and a recorder for any
    other URL a token names (`x5u`). Neither server may ever be asked anything."""

    def __init__(self, jwks: JwksServer, recorder: EchoServer, rsa, ec) -> None:
        self.jwks, self.recorder, self.rsa, self.ec = jwks, recorder, rsa, ec
        self.jku = f"http://127.0.0.1:{jwks.port}/jwks.json"
        self.x5u = f"http://127.0.0.1:{recorder.port}/cert.pem"

    def was_asked(self) -> bool:
        return self.jwks.hits > 0 or self.recorder.requests != []


@pytest.fixture(scope="module")
def attacker():
    rsa, ec = make_key("RS256", kid="attacker-rsa"), make_key("ES256", kid="attacker-ec")
    with JwksServer([rsa, ec]) as jwks, EchoServer() as recorder:
        yield Attacker(jwks, recorder, rsa, ec)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, keys):
    with shared_stack(tmp_path_factory, list(keys.values()), concurrency=2) as s:
        yield s


@pytest.fixture(scope="module")
def baseline(stack, keys):
    """Envoy's Wasm runtime gauges and the JWKS hit count before any attack (keys loaded)."""
    assert stack.get("/mcp", token=mint(keys["ES256"]))[0].status_code == 200
    return {"vms": stack.envoy.stats(r"^wasm\.envoy\.wasm\.runtime\.v8\.(active|created)$"),
            "jwks_hits": stack.jwks.hits, "pid": stack.envoy.proc.pid}


# ---- building blocks ----------------------------------------------------------------------------------


def resign(key, header: dict | None = None, payload: dict | None = None, alg: str | None = None) -> str:
    """A token with this header and these claims, correctly signed by `key`."""
    hdr = {"alg": alg or key.alg, "typ": "JWT", "kid": key.kid} if header is None else header
    return sign_raw(key, json.dumps(hdr), json.dumps(claims() if payload is None else payload), alg=alg or key.alg)


def with_signature(token: str, signature: str) -> str:
    head, payload, _ = token.split(".")
    return f"{head}.{payload}.{signature}"


def non_canonical(part: str) -> str:
    """The same bytes in base64url with non-zero unused trailing bits (valid to lenient decoders)."""
    assert len(part) % 4 in (2, 3), "needs a part whose length leaves unused bits"
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return part[:-1] + alphabet[alphabet.index(part[-1]) | 1]


def self_signed_cert_b64(key) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "attacker")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public)
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key.private, hashes.SHA256()))
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def padded_to(key, size: int) -> str:
    """A valid token of exactly `size` bytes. Unpadded base64 cannot have every length, so a filler claim
    and a filler header member are adjusted together."""
    estimate = (size - len(mint(key, header={"x": ""}, filler=""))) * 3 // 4
    for header_fill in range(4):
        for filler in range(estimate - 8, estimate + 8):
            token = mint(key, header={"x": "x" * header_fill}, filler="x" * filler)
            if len(token) == size:
                return token
    raise AssertionError(f"no token of exactly {size} bytes")


def non_canonical_header(key) -> str:
    """A signed token whose header part is re-spelled with non-zero unused bits."""
    for fill in range(3):
        token = resign(key, header={"alg": key.alg, "kid": key.kid, "x": "a" * fill})
        head = token.split(".")[0]
        if len(head) % 4 in (2, 3):
            return non_canonical(head) + token[len(head):]
    raise AssertionError("unreachable: one of three lengths leaves unused bits")


def kib_token(key, kib: int) -> str:
    """A genuine token of at least `kib` KiB (the filler claim is base64-encoded: 4 bytes per 3)."""
    return mint(key, filler="x" * (kib * 1024 * 3 // 4))


# ---- the attacks ----------------------------------------------------------------------------------------

def _cases() -> list[tuple[str, str, Callable]]:
    """(id, expected reason, token builder(keys, attacker))."""
    now = int(time.time())
    out: list[tuple[str, str, Callable]] = []

    def add(case_id: str, reason: str, build: Callable) -> None:
        out.append((case_id, reason, build))

    # alg: none in any case; with an empty signature the empty signature is refused first.
    for alg in ["none", "None", "NONE", "nOnE"]:
        add(f"alg_{alg}_empty_sig", "bad_signature",
            lambda k, a, alg=alg: raw_token({"alg": alg, "typ": "JWT", "kid": k["RS256"].kid}, claims()))
        add(f"alg_{alg}_with_sig", "alg_not_allowed",
            lambda k, a, alg=alg: raw_token({"alg": alg, "kid": k["RS256"].kid}, claims(), b"\x00" * 32))

    # HS* signed with the trusted public key's bytes as the HMAC secret (key confusion).
    def rsa_secrets(k) -> dict[str, bytes]:
        pub = k["RS256"].public
        der = serialization.Encoding.DER
        return {
            "spki_pem": k["RS256"].public_pem(),
            "spki_der": pub.public_bytes(der, serialization.PublicFormat.SubjectPublicKeyInfo),
            "pkcs1_pem": pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
            "pkcs1_der": pub.public_bytes(der, serialization.PublicFormat.PKCS1),
            "jwk_json": json.dumps(k["RS256"].jwk).encode(),
        }

    for secret_name in ["spki_pem", "spki_der", "pkcs1_pem", "pkcs1_der", "jwk_json"]:
        for alg in ["HS256", "HS384", "HS512"]:
            add(f"{alg}_rsa_{secret_name}", "alg_not_allowed",
                lambda k, a, s=secret_name, alg=alg: hmac_token(rsa_secrets(k)[s], alg, k["RS256"].kid))
    add("HS256_ec_spki_pem", "alg_not_allowed", lambda k, a: hmac_token(k["ES256"].public_pem(), "HS256", k["ES256"].kid))

    # `alg` that does not fit the key the `kid` names (every JWK here pins its alg).
    add("RS384_on_RS256_key", "alg_key_mismatch", lambda k, a: resign(k["RS256"], alg="RS384",
        header={"alg": "RS384", "kid": k["RS256"].kid}))
    add("PS256_on_RS256_key", "alg_key_mismatch", lambda k, a: resign(k["RS256"], alg="PS256",
        header={"alg": "PS256", "kid": k["RS256"].kid}))
    add("ES256_header_on_RSA_kid", "alg_key_mismatch", lambda k, a: resign(k["ES256"],
        header={"alg": "ES256", "kid": k["RS256"].kid}))
    add("ES384_header_on_P256_kid", "alg_key_mismatch", lambda k, a: resign(k["ES384"],
        header={"alg": "ES384", "kid": k["ES256"].kid}))
    add("EdDSA_header_on_EC_kid", "alg_key_mismatch", lambda k, a: resign(k["EdDSA"],
        header={"alg": "EdDSA", "kid": k["ES256"].kid}))
    add("alg_not_configured_PS512", "alg_not_allowed", lambda k, a: resign(k["PS256"], alg="PS512",
        header={"alg": "PS512", "kid": k["PS256"].kid}))
    for alg in ["ES512", "rs256", "RS256 ", "ES256K", ""]:
        add(f"alg_unknown_{alg.strip() or 'empty'}{'_space' if alg.endswith(' ') else ''}", "alg_not_allowed",
            lambda k, a, alg=alg: raw_token({"alg": alg, "kid": k["RS256"].kid}, claims(), b"x" * 64))
    for name, value in [("missing", OMIT), ("number", 256), ("array", ["RS256"]), ("null", None)]:
        add(f"alg_{name}", "malformed", lambda k, a, value=value: resign(
            k["RS256"], header={kk: vv for kk, vv in {"alg": value, "kid": k["RS256"].kid}.items() if vv is not OMIT}))

    # `kid` as an injection vector: looked up as an opaque string, never as a path or a query.
    for name, kid in [("path_traversal", "../../../../etc/passwd"), ("sql", "' OR 1=1 --"),
                      ("nul", "rs256-1\u0000"), ("crlf", "x\r\nx-injected: yes"), ("whitespace", " rs256-1"),
                      ("unicode", "ключ-🔑"), ("4KB", "k" * 4096)]:
        add(f"kid_{name}", "unknown_kid", lambda k, a, kid=kid: resign(k["RS256"],
            header={"alg": "RS256", "typ": "JWT", "kid": kid}))
    add("kid_10KB", "too_large", lambda k, a: resign(k["RS256"], header={"alg": "RS256", "kid": "k" * 10240}))
    for name, kid in [("number", 7), ("object", {"kid": "rs256-1"}), ("array", ["rs256-1"]), ("null", None),
                      ("bool", True)]:
        add(f"kid_{name}", "malformed", lambda k, a, kid=kid: resign(k["RS256"], header={"alg": "RS256", "kid": kid}))

    # Key-location headers: never followed. With the attacker's kid the key is simply not found; without a
    # kid the trusted keys are tried and the signature fails. (`attacker.was_asked()` says whether any was.)
    add("jku_attacker_kid", "unknown_kid", lambda k, a: mint(a.rsa, header={"jku": a.jku}))
    add("jku_no_kid", "bad_signature", lambda k, a: mint(a.rsa, header={"kid": OMIT, "jku": a.jku}))
    add("jku_with_trusted_kid", "bad_signature", lambda k, a: mint(a.rsa, header={"kid": k["RS256"].kid, "jku": a.jku}))
    add("x5u_attacker_kid", "unknown_kid", lambda k, a: mint(a.rsa, header={"x5u": a.x5u}))
    add("jwk_embedded_attacker_kid", "unknown_kid", lambda k, a: mint(a.ec, header={"jwk": a.ec.jwk}))
    add("jwk_embedded_no_kid", "bad_signature", lambda k, a: mint(a.ec, header={
        "kid": OMIT, "jwk": {kk: vv for kk, vv in a.ec.jwk.items() if kk != "kid"}}))
    add("x5c_attacker_cert_no_kid", "bad_signature", lambda k, a: mint(a.rsa, header={
        "kid": OMIT, "x5c": [self_signed_cert_b64(a.rsa)], "x5u": a.x5u}))

    # crit: no extension is understood, so any crit refuses the token (RFC 7515 4.1.11).
    for name, extra in [("exp", {"crit": ["exp"], "exp": now + 60}), ("b64", {"crit": ["b64"], "b64": False}),
                        ("empty", {"crit": []}), ("unknown", {"crit": ["x-custom"], "x-custom": 1})]:
        add(f"crit_{name}", "crit_unsupported", lambda k, a, extra=extra: resign(
            k["ES256"], header={"alg": "ES256", "kid": k["ES256"].kid, **extra}))

    # Signatures: empty, truncated, one byte, psychic ECDSA (r = s = 0, CVE-2022-21449).
    add("sig_empty", "bad_signature", lambda k, a: with_signature(mint(k["ES256"]), ""))
    # (cut at a multiple of 4 characters, so the rest is still canonical base64url)
    add("sig_truncated_rsa", "bad_signature", lambda k, a: (lambda t: with_signature(t, t.split(".")[2][:168]))(mint(k["RS256"])))
    add("sig_truncated_ec", "bad_signature", lambda k, a: (lambda t: with_signature(t, t.split(".")[2][:40]))(mint(k["ES256"])))
    add("sig_one_byte", "bad_signature", lambda k, a: with_signature(mint(k["EdDSA"]), "AA"))
    add("psychic_es256", "bad_signature", lambda k, a: with_signature(mint(k["ES256"]), b64url(bytes(64))))
    add("psychic_es384", "bad_signature", lambda k, a: with_signature(mint(k["ES384"]), b64url(bytes(96))))
    add("sig_der_encoded_ecdsa", "bad_signature", lambda k, a: with_signature(mint(k["ES256"]), b64url(
        b"\x30\x44\x02\x20" + b"\x01" * 32 + b"\x02\x20" + b"\x01" * 32)))

    # Encoding: non-canonical base64url, padding, whitespace, the standard alphabet.
    add("b64_non_canonical_sig", "malformed", lambda k, a: (lambda t: with_signature(t, non_canonical(t.split(".")[2])))(mint(k["ES256"])))
    add("b64_non_canonical_header", "malformed", lambda k, a: non_canonical_header(k["ES256"]))
    add("b64_padding", "malformed", lambda k, a: (lambda t: with_signature(t, t.split(".")[2] + "=="))(mint(k["ES256"])))
    add("b64_padding_header", "malformed", lambda k, a: (lambda p: f"{p[0]}=.{p[1]}.{p[2]}")(mint(k["ES256"]).split(".")))
    add("b64_space_inside", "malformed", lambda k, a: (lambda t: t[:40] + " " + t[40:])(mint(k["ES256"])))
    add("b64_tab_inside", "malformed", lambda k, a: (lambda t: t[:40] + "\t" + t[40:])(mint(k["ES256"])))
    add("b64_standard_alphabet", "malformed", lambda k, a: (lambda t: t[:-2] + "+/")(mint(k["ES256"])))

    # Duplicate members: other parsers keep the first, serde keeps the last; refused either way.
    def dup(k, header_text: str | None = None, claims_text: str | None = None) -> str:
        key = k["ES256"]
        return sign_raw(key, header_text or json.dumps({"alg": "ES256", "kid": key.kid}), claims_text or json.dumps(claims()))

    add("dup_header_kid", "malformed", lambda k, a: dup(k, header_text='{"alg":"ES256","kid":"%s","kid":"%s"}' % (k["ES256"].kid, k["ES256"].kid)))
    add("dup_header_alg", "malformed", lambda k, a: dup(k, header_text='{"alg":"HS256","alg":"ES256","kid":"%s"}' % k["ES256"].kid))
    add("dup_claim_sub", "malformed", lambda k, a: dup(k, claims_text=json.dumps(claims())[:-1] + ',"sub":"admin"}'))
    add("dup_claim_aud", "malformed", lambda k, a: dup(k, claims_text=json.dumps(claims(aud="other"))[:-1] + f',"aud":"{AUDIENCE}"}}'))
    add("dup_claim_exp", "malformed", lambda k, a: dup(k, claims_text=json.dumps(claims(exp=now - 10))[:-1] + f',"exp":{now + 3600}}}'))
    add("dup_claim_escaped_scope", "malformed", lambda k, a: dup(k, claims_text=json.dumps(claims())[:-1] + r',"\u0073cope":"admin"}'))

    # Time claims: edge values and wrong types.
    def timed(k, **over) -> str:
        return resign(k["EdDSA"], payload=claims(**over))

    for name, over, reason in [
        ("exp_0", {"exp": 0}, "expired"), ("exp_negative", {"exp": -1}, "expired"),
        ("exp_61s_ago", {"exp": now - 61 - 5, "iat": now - 600, "nbf": now - 600}, "expired"),
        ("exp_string", {"exp": str(now + 300)}, "bad_claim"), ("exp_float_1e300", {"exp": 1e300}, "bad_claim"),
        ("exp_2pow64", {"exp": 2 ** 64}, "bad_claim"), ("exp_bool", {"exp": True}, "bad_claim"),
        ("exp_null", {"exp": None}, "bad_claim"), ("exp_array", {"exp": [now + 300]}, "bad_claim"),
        ("exp_missing", {"exp": OMIT}, "missing_exp"),
        ("nbf_future", {"nbf": now + 3600}, "not_yet_valid"), ("nbf_string", {"nbf": "0"}, "bad_claim"),
        ("nbf_object", {"nbf": {}}, "bad_claim"),
        ("iat_future", {"iat": now + 3600, "nbf": OMIT}, "issued_in_future"), ("iat_string", {"iat": "now"}, "bad_claim"),
    ]:
        add(f"time_{name}", reason, lambda k, a, over=over: timed(k, **over))

    # aud / iss / sub / scope of the wrong type, and valid tokens for someone else.
    for name, over, reason in [
        ("aud_number", {"aud": 123}, "bad_claim"), ("aud_object", {"aud": {"a": AUDIENCE}}, "bad_claim"),
        ("aud_array_of_numbers", {"aud": [1, 2]}, "bad_claim"), ("aud_null", {"aud": None}, "bad_claim"),
        ("aud_bool", {"aud": True}, "bad_claim"), ("aud_empty_string", {"aud": ""}, "audience_not_allowed"),
        ("aud_empty_array", {"aud": []}, "audience_not_allowed"),
        ("aud_other", {"aud": "another-mcp-server"}, "audience_not_allowed"),
        ("aud_prefix", {"aud": AUDIENCE + "-evil"}, "audience_not_allowed"),
        ("iss_number", {"iss": 1}, "bad_claim"), ("iss_array", {"iss": [ISSUER]}, "bad_claim"),
        ("iss_null", {"iss": None}, "bad_claim"), ("iss_object", {"iss": {"iss": ISSUER}}, "bad_claim"),
        ("iss_other", {"iss": "https://evil.test"}, "issuer_not_allowed"),
        ("iss_trailing_slash", {"iss": ISSUER + "/"}, "issuer_not_allowed"),
        ("sub_number", {"sub": 42}, "bad_claim"), ("scope_array", {"scope": ["admin"]}, "bad_claim"),
    ]:
        add(f"claim_{name}", reason, lambda k, a, over=over: resign(k["ES384"], payload=claims(**over)))

    # Sizes: the filter's limit is 8192 bytes; Envoy's own header limit (60 KiB) is tested separately.
    add("size_8KB_forged", "bad_signature", lambda k, a: (lambda t: with_signature(t, "A" * len(t.split(".")[2])))(
        padded_to(k["RS256"], MAX_TOKEN_BYTES)))
    add("size_limit_plus_1", "too_large", lambda k, a: padded_to(k["RS256"], MAX_TOKEN_BYTES + 1))
    add("size_56KB", "too_large", lambda k, a: kib_token(k["RS256"], 56))

    # Shapes: many dots, JWE.
    add("dots_4_parts", "malformed", lambda k, a: mint(k["ES256"]) + ".x")
    add("dots_trailing", "malformed", lambda k, a: mint(k["ES256"]) + ".")
    add("dots_1000", "malformed", lambda k, a: "." * 1000)
    add("dots_only_4", "encrypted", lambda k, a: "....")
    add("dots_only_2", "bad_signature", lambda k, a: "..")
    add("jwe_compact_5_parts", "encrypted", lambda k, a: ".".join([
        b64url_json({"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": k["RS256"].kid}),
        b64url(b"\x01" * 256), b64url(b"\x02" * 12), b64url(b"ciphertext"), b64url(b"\x03" * 16)]))
    add("jws_with_enc_header", "encrypted", lambda k, a: resign(
        k["EdDSA"], header={"alg": "EdDSA", "kid": k["EdDSA"].kid, "enc": "A256GCM"}))
    add("header_not_object", "malformed", lambda k, a: sign_raw(k["ES256"], '["ES256"]', json.dumps(claims())))
    add("claims_not_object", "malformed", lambda k, a: sign_raw(k["ES256"], json.dumps({"alg": "ES256", "kid": k["ES256"].kid}), '"admin"'))
    add("claims_not_json", "malformed", lambda k, a: sign_raw(k["ES256"], json.dumps({"alg": "ES256", "kid": k["ES256"].kid}), "{sub: admin}"))
    return out


CASES = _cases()


@pytest.mark.parametrize("reason, build", [(reason, build) for _, reason, build in CASES],
                         ids=[case_id for case_id, _, _ in CASES])
def test_attack_is_refused_counted_and_never_reaches_upstream(stack, keys, attacker, baseline, reason, build):
    token = build(keys, attacker)
    denied = stack.envoy.metric("mcp_authz.denied")
    by_reason = stack.envoy.metric(f"mcp_authz.denied.{reason}")
    resp, tid = stack.request("POST", "/mcp", token=token, content=b'{"jsonrpc":"2.0","id":1,"method":"ping"}',
                              headers={"content-type": "application/json"})
    assert resp.status_code == 401, resp.text
    challenge = resp.headers["www-authenticate"]
    assert re.search(r'error="invalid_token"', challenge), challenge
    assert f'error_description="{DESCRIPTIONS[reason]}"' in challenge, (reason, challenge)
    assert resp.json() == {"error": "invalid_token", "message": DESCRIPTIONS[reason]}
    assert stack.envoy.metric(f"mcp_authz.denied.{reason}") == by_reason + 1
    assert stack.envoy.metric("mcp_authz.denied") == denied + 1
    assert stack.upstream_saw(tid) == []
    assert not attacker.was_asked(), "a URL named by the token was fetched"


def test_token_at_the_size_limit_is_accepted(stack, keys):
    """Control for the size cases: a genuine token of exactly max_token_bytes passes."""
    token = padded_to(keys["RS256"], MAX_TOKEN_BYTES)
    assert len(token) == MAX_TOKEN_BYTES
    resp, tid = stack.get("/mcp", token=token)
    assert resp.status_code == 200, resp.text
    assert len(stack.upstream_saw(tid)) == 1


@pytest.mark.parametrize("size_kib", [64, 100])
def test_token_over_envoys_header_limit_is_431_from_envoy(stack, keys, size_kib):
    """Above Envoy's own request-header limit (max_request_headers_kb, 60 KiB by default) Envoy's codec
    answers 431 before any filter runs: the filter neither sees nor counts it (Envoy counts it as a
    protocol error), and nothing goes upstream."""
    protocol_errors = "http.ingress.downstream_cx_protocol_error"
    denied, errors = stack.envoy.metric("mcp_authz.denied"), stack.envoy.stats(f"^{protocol_errors}$")[protocol_errors]
    resp, tid = stack.get("/mcp", token=kib_token(keys["RS256"], size_kib))
    assert resp.status_code == 431
    assert stack.envoy.metric("mcp_authz.denied") == denied
    assert stack.envoy.stats(f"^{protocol_errors}$")[protocol_errors] == errors + 1
    assert stack.upstream_saw(tid) == []


def test_fractional_exp_within_range_is_accepted(stack, keys):
    """Control for the time cases: NumericDate may be fractional (RFC 7519 2)."""
    token = resign(keys["EdDSA"], payload=claims(exp=time.time() + 300.5))
    assert stack.get("/mcp", token=token)[0].status_code == 200


def test_attacks_left_the_filter_intact(stack, keys, baseline, attacker):
    """After every attack above: the same Envoy process and VMs (none crashed or reloaded), every
    algorithm still verifies, the unknown-kid tokens caused at most one early JWKS fetch, and no URL named
    in a token was ever fetched."""
    assert stack.envoy.running and stack.envoy.proc.pid == baseline["pid"]
    assert stack.envoy.stats(r"^wasm\.envoy\.wasm\.runtime\.v8\.(active|created)$") == baseline["vms"]
    reloads = stack.envoy.stats(r"^wasm\.mcp_authz\.vm_reload")
    assert all(v == 0 for v in reloads.values()), reloads
    for alg in ALGORITHMS:
        resp, tid = stack.get("/mcp", token=mint(keys[alg], sub=f"after-{alg}"))
        assert resp.status_code == 200, (alg, resp.text)
        assert stack.upstream_saw(tid)[0]["headers"]["x-user-sub"] == f"after-{alg}"
    assert stack.jwks.hits <= baseline["jwks_hits"] + 1, "random kids must not force JWKS fetches"
    assert (stack.envoy.metric("mcp_authz.jwks_refetch_unknown_kid") or 0) <= 1
    assert not attacker.was_asked()
