"""The infusions service's rules, pure (filled in by the infusions issue)."""
