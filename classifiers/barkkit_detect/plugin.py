"""Hook implementations of barkkit_detect (filled in by its issue)."""
