"""camwatch."""
