"""therapy: the coordinator's open urgent alerts, kept to refuse a discharge or a close"""

from shared.migrations import create_urgent_alert_table, drop_urgent_alert_table

revision = "ther_0005"
down_revision = "ther_0004"

upgrade, downgrade = create_urgent_alert_table, drop_urgent_alert_table
