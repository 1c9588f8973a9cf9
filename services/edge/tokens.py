"""What the edge asks of an access token: who issued it, for whom, and the scopes it grants.

`recsys token` mints tokens with these claims, the local PKI signs them, and the render makes
Envoy's jwt_authn and RBAC filters check them: one home, so the three cannot disagree.
"""

from __future__ import annotations

# `iss` and `aud` of the tokens every profile accepts (an EdgeSecurity can name others).
ISSUER = "recsys-local"
AUDIENCE = "recsys-edge"
# The longest a token may live (exp - iat): Envoy refuses longer ones, `recsys token` never
# mints them.
MAX_LIFETIME_S = 7 * 24 * 3600

# The `scope` claim (space-separated, as in OAuth 2) that each service's routes ask for.
INGEST_WRITE = "ingest:write"
RECOMMEND_READ = "recommend:read"
ADMIN = "admin"  # TrainerService: training, model versions, promotion
SCOPES = (INGEST_WRITE, RECOMMEND_READ, ADMIN)
