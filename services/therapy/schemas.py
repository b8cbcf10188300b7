"""Request and response bodies of the therapy API (filled in by the therapy issue)."""
