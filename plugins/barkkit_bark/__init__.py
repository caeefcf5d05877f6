"""barkkit_bark: built-in barkkit plugin."""
