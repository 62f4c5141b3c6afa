"""Tables of the tamper-evident audit log (see :mod:`bastion.core.audit`; stable API).

``audit_events`` holds the hash chain: one row per event, ``seq`` counting from 1 with no gaps,
``prev_hash`` the ``hash`` of row ``seq - 1`` (64 zeros for the first) and ``hash`` the SHA-256
of the row's canonical encoding. ``audit_checkpoints`` holds the signed heads: one row per
checkpoint, keyed by the ``seq`` of the event it covers. The primary key on ``seq`` is the last
line of defense against two writers forking the chain; the writers serialise on a lock first.
"""

from __future__ import annotations

import sqlalchemy as sa

from bastion.core.storage import metadata

__all__ = ["TABLES", "audit_checkpoints", "audit_events"]

audit_events = sa.Table(
    "audit_events",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    # ISO-8601 UTC, fixed width (YYYY-MM-DDTHH:MM:SS.ffffffZ): sorts as text.
    sa.Column("ts", sa.String(40), nullable=False, index=True),
    sa.Column("actor", sa.String(200), nullable=False),
    sa.Column("action", sa.String(100), nullable=False, index=True),
    sa.Column("subject", sa.Text, nullable=False),
    # Canonical JSON text of the details object, exactly the bytes that were hashed.
    sa.Column("details", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False, unique=True),
)

audit_checkpoints = sa.Table(
    "audit_checkpoints",
    metadata,
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("head_hash", sa.String(64), nullable=False),
    sa.Column("ts", sa.String(40), nullable=False),
    sa.Column("key_id", sa.String(64), nullable=False),
    # Base64 of the signature over the checkpoint's signed message.
    sa.Column("signature", sa.Text, nullable=False),
)

TABLES: tuple[sa.Table, ...] = (audit_events, audit_checkpoints)
