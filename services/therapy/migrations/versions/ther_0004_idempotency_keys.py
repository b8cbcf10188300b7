"""therapy: idempotency keys, the stored answers to requests sent with an Idempotency-Key"""

from shared.migrations import create_idempotency_table, drop_idempotency_table

revision = "ther_0004"
down_revision = "ther_0003"

upgrade, downgrade = create_idempotency_table, drop_idempotency_table
