"""barkkit_detect: built-in barkkit plugin."""
