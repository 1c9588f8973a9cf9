"""`recsys token`: mint an access token for the edge, signed with the local signing key.

Envoy checks every call at the edge against a JWKS (`jwt_authn`) and each route's scope:
`ingest:write` for IngestService, `recommend:read` for RecommenderService, `admin` for
TrainerService (training, model versions, promotion). Tokens are ES256 JWTs whose `kid` is the
RFC 7638 thumbprint of the signing key, so a JWKS holding several keys (during a rotation)
picks the right one. The local stack generates the key (`scripts/localstack/pki.py`); in
production an identity provider issues tokens and this command is for operators' tests.

    TOKEN=$(recsys token --scope recommend:read)
    curl --cacert .local/pki/ca.crt -H "authorization: Bearer $TOKEN" \\
        https://127.0.0.1:8080/v1/model
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from services.edge.tokens import AUDIENCE, ISSUER, MAX_LIFETIME_S, SCOPES

ALGORITHM = "ES256"
DEFAULT_TTL_S = 3600
MAX_TTL_S = MAX_LIFETIME_S
KEY_FILE_ENV = "RECSYS_CLI_TOKEN_KEY_FILE"
DEFAULT_KEY_FILE = Path(".local/pki/jwt/signing-key.pem")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def public_jwk(public_key: Any) -> dict[str, str]:
    """The JWK of an EC P-256 public key, with `kid` (its RFC 7638 thumbprint) and `alg`."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != (
            "secp256r1"):
        raise ValueError("the signing key must be an EC P-256 key (ES256)")
    numbers = public_key.public_numbers()
    jwk = {"crv": "P-256", "kty": "EC",
           "x": _b64(numbers.x.to_bytes(32, "big")), "y": _b64(numbers.y.to_bytes(32, "big"))}
    # RFC 7638: SHA-256 of the required members, sorted, no whitespace.
    canonical = json.dumps(jwk, sort_keys=True, separators=(",", ":")).encode()
    return {**jwk, "kid": _b64(hashlib.sha256(canonical).digest()), "alg": ALGORITHM,
            "use": "sig"}


def load_signing_key(key_file: Path) -> Any:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return load_pem_private_key(Path(key_file).read_bytes(), password=None)


def mint_token(
    scopes: Iterable[str],
    *,
    key_file: Path | str | None = None,
    subject: str = "recsys-cli",
    ttl_s: int = DEFAULT_TTL_S,
    issuer: str = ISSUER,
    audience: str = AUDIENCE,
    now: float | None = None,
) -> str:
    """A signed access token carrying `scopes` (space-separated `scope` claim, as in OAuth 2).

    `key_file` defaults to $RECSYS_CLI_TOKEN_KEY_FILE, else .local/pki/jwt/signing-key.pem.
    `now` (seconds since the epoch) is for tests that need an expired token.
    """
    import jwt

    scopes = list(dict.fromkeys(scopes))
    if not scopes:
        raise ValueError("a token needs at least one scope")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise ValueError(f"ttl must be 1 to {MAX_TTL_S} s, got {ttl_s}")
    path = Path(key_file or os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE)
    key = load_signing_key(path)
    issued = int(time.time() if now is None else now)
    claims = {"iss": issuer, "aud": audience, "sub": subject, "scope": " ".join(scopes),
              "iat": issued, "nbf": issued, "exp": issued + ttl_s, "jti": uuid.uuid4().hex}
    kid = public_jwk(key.public_key())["kid"]
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def register(subparsers: Any) -> None:
    token = subparsers.add_parser(
        "token", help="mint an access token for the edge (local signing key)",
        description="Print a signed JWT for Envoy at the edge. Scopes: ingest:write "
                    "(IngestService), recommend:read (RecommenderService), admin "
                    "(TrainerService).")
    token.add_argument("--scope", action="append", required=True, choices=SCOPES,
                       help="a scope the token grants; repeat for several")
    token.add_argument("--subject", default="recsys-cli",
                       help="the client's identity (`sub`; rate limits are per subject)")
    token.add_argument("--ttl", type=int, default=DEFAULT_TTL_S,
                       help=f"seconds until it expires (default %(default)s, at most {MAX_TTL_S})")
    token.add_argument("--key-file", type=Path,
                       default=os.environ.get(KEY_FILE_ENV) or DEFAULT_KEY_FILE,
                       help=f"PEM signing key (default ${KEY_FILE_ENV} or {DEFAULT_KEY_FILE})")
    token.add_argument("--issuer", default=ISSUER, help="`iss` (default %(default)s)")
    token.add_argument("--audience", default=AUDIENCE, help="`aud` (default %(default)s)")
    token.set_defaults(func=_token)


def _token(args: argparse.Namespace) -> int:
    try:
        print(mint_token(args.scope, key_file=args.key_file, subject=args.subject,
                         ttl_s=args.ttl, issuer=args.issuer, audience=args.audience))
    except (OSError, ValueError) as exc:
        print(f"recsys token: error: {exc}", file=sys.stderr)
        return 2
    return 0
