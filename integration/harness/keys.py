"""Signing keys (exported as JWKs) and token minting, including hand-crafted tokens for attacks. The
bundled stack's servers (stack/) sign with the same keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

__all__ = ["SigningKey", "jwks_document", "make_key", "load_key", "mint", "claims", "raw_token", "OMIT", "ISSUER",
           "AUDIENCE"]

ISSUER = "https://idp.test"
AUDIENCE = "mcp-test"

# Algorithms the filter is configured to accept in the test configuration.
ALGORITHMS = ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"]

OMIT = object()  # pass as a claim value to leave the claim out


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any
    jwk: dict = field(default_factory=dict)

    @property
    def public(self):
        return self.private.public_key()

    def public_pem(self) -> bytes:
        return self.public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    def private_pem(self) -> bytes:
        return self.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption())

    def sign(self, claims: dict, headers: dict | None = None) -> str:
        hdr = {"kid": self.kid, "typ": "at+jwt"}
        hdr.update(headers or {})
        return jwt.encode(claims, self.private, algorithm=self.alg, headers=hdr)


def make_key(alg: str = "RS256", kid: str | None = None) -> SigningKey:
    """A fresh key for `alg` (RSA 2048 for RS*/PS*, P-256, P-384, Ed25519) with its public JWK (kid, alg,
    use=sig)."""
    kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:12]}"
    if alg.startswith(("RS", "PS")):
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif alg in ("ES256", "ES384"):
        private = ec.generate_private_key(ec.SECP256R1() if alg == "ES256" else ec.SECP384R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    return _signing_key(alg, kid, private)


def load_key(alg: str, kid: str, private_pem: bytes) -> SigningKey:
    """A key saved with `SigningKey.private_pem()` (the IdP's --keys-file), with its public JWK."""
    return _signing_key(alg, kid, serialization.load_pem_private_key(private_pem, password=None))


def _signing_key(alg: str, kid: str, private: Any) -> SigningKey:
    if alg.startswith(("RS", "PS")):
        public_jwk = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg in ("ES256", "ES384"):
        public_jwk = ECAlgorithm.to_jwk(private.public_key(), as_dict=True)
    elif alg == "EdDSA":
        public_jwk = OKPAlgorithm.to_jwk(private.public_key(), as_dict=True)
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    public_jwk.update({"kid": kid, "alg": alg, "use": "sig"})
    return SigningKey(kid=kid, alg=alg, private=private, jwk=public_jwk)


def jwks_document(keys: list[SigningKey]) -> dict:
    return {"keys": [k.jwk for k in keys]}


def claims(**overrides: Any) -> dict:
    """Standard valid claims; override any, or pass OMIT to drop one."""
    now = int(time.time())
    base: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "user-123",
        "scope": "read:tasks write:tasks",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not OMIT}


def mint(key: SigningKey, header: dict | None = None, alg: str | None = None, **claim_overrides: Any) -> str:
    """A token signed by `key` (alg defaults to the key's); `header` entries override kid/typ etc."""
    hdr = {"kid": key.kid, "typ": "JWT"}
    if header:
        hdr.update(header)
    hdr = {k: v for k, v in hdr.items() if v is not OMIT}
    return jwt.encode(claims(**claim_overrides), key.private, algorithm=alg or key.alg, headers=hdr)


def raw_token(header: dict, payload: dict, signature: bytes = b"") -> str:
    """Assemble a compact JWS by hand (no checks): for alg=none, bad encodings and the like."""
    return f"{b64url_json(header)}.{b64url_json(payload)}.{b64url(signature)}"


_HMAC_HASHES = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


def hmac_token(secret: bytes, alg: str = "HS256", kid: str | None = None, **claim_overrides: Any) -> str:
    """A token MAC'ed with `secret` (HS256/384/512): with a public key's bytes as the secret, the
    algorithm-confusion attack on verifiers that let the token's `alg` pick how a key is used."""
    header = {"alg": alg, "typ": "JWT"} | ({"kid": kid} if kid else {})
    signing_input = f"{b64url_json(header)}.{b64url_json(claims(**claim_overrides))}"
    mac = hmac.new(secret, signing_input.encode(), _HMAC_HASHES[alg]).digest()
    return f"{signing_input}.{b64url(mac)}"


def hs256_with_public_key(key: SigningKey, **claim_overrides: Any) -> str:
    """The classic algorithm-confusion attack: HS256 'signed' with the RSA public key's PEM as secret."""
    return hmac_token(key.public_pem(), "HS256", key.kid, **claim_overrides)


def sign_raw(key: SigningKey, header_text: str, payload_text: str, alg: str | None = None) -> str:
    """A correctly signed token over exactly these JSON texts (duplicate keys, odd types and escapes
    survive), so that a refusal can only come from the content, never from the signature."""
    signing_input = f"{b64url(header_text.encode())}.{b64url(payload_text.encode())}"
    signature = jwt.get_algorithm_by_name(alg or key.alg).sign(signing_input.encode(), key.private)
    return f"{signing_input}.{b64url(signature)}"


def tamper_signature(token: str) -> str:
    """Flip bits in the middle of the signature (keeps it valid base64url of the same length)."""
    head, payload, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x55
    return f"{head}.{payload}.{b64url(bytes(raw))}"
