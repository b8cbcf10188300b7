"""coordinator: idempotency keys, the stored answers to requests sent with an Idempotency-Key"""

from shared.migrations import create_idempotency_table, drop_idempotency_table

revision = "coor_0007"
down_revision = "coor_0006"

upgrade, downgrade = create_idempotency_table, drop_idempotency_table
