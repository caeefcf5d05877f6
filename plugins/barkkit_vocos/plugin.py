"""Hook implementations of barkkit_vocos (filled in by its issue)."""
