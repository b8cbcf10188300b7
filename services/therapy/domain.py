"""The therapy service's rules, pure (filled in by the therapy issue)."""
