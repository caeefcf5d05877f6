"""barkkit_encodec: built-in barkkit plugin."""
