"""Hook implementations of barkkit_bark (filled in by its issue)."""
