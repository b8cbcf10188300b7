"""infusions: the coordinator's open urgent alerts, kept to refuse a discharge or a close"""

from shared.migrations import create_urgent_alert_table, drop_urgent_alert_table

revision = "infu_0007"
down_revision = "infu_0006"

upgrade, downgrade = create_urgent_alert_table, drop_urgent_alert_table
