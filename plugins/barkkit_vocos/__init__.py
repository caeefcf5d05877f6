"""barkkit_vocos: built-in barkkit plugin."""
