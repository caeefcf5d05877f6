"""Hook implementations of barkkit_encodec (filled in by its issue)."""
