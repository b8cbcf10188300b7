"""Request and response bodies of the infusions API (filled in by the infusions issue)."""
