"""gradwatch."""
