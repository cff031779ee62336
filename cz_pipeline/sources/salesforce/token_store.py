"""A warehouse-backed `TokenStore`: rotated Salesforce refresh tokens in `sync.oauth_tokens`,
encrypted with Fernet (AES-128-CBC + HMAC-SHA256) under a key the deployment supplies (e.g. the
`CZ_TOKEN_KEY` secret, generated with `Fernet.generate_key()`). The table holds only ciphertext
and an opaque grant key; without the key a stored token is unreadable, and a token that no longer
decrypts (key changed) counts as absent, so the configured refresh token is used again."""

from __future__ import annotations

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken


class WarehouseTokenStore:
    def __init__(self, engine: sa.Engine, tenant_id: str, encryption_key: str | bytes, system: str = "salesforce"):
        self.engine, self.tenant_id, self.system = engine, tenant_id, system
        self._fernet = Fernet(encryption_key)

    def load(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT ciphertext FROM sync.oauth_tokens WHERE tenant_id = :t "
                                       "AND system = :s AND grant_key = :k"),
                               {"t": self.tenant_id, "s": self.system, "k": key}).first()
        if row is None:
            return None
        try:
            return self._fernet.decrypt(bytes(row[0])).decode()
        except InvalidToken:
            return None

    def save(self, key: str, refresh_token: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text("""
                INSERT INTO sync.oauth_tokens (tenant_id, system, grant_key, ciphertext)
                VALUES (:t, :s, :k, :c)
                ON CONFLICT (tenant_id, system, grant_key)
                DO UPDATE SET ciphertext = EXCLUDED.ciphertext, updated_at = now()"""),
                         {"t": self.tenant_id, "s": self.system, "k": key,
                          "c": self._fernet.encrypt(refresh_token.encode())})
