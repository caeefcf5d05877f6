"""barkkit_vocos: Vocos as a barkkit decoder for Bark's tokens (built-in plugin, optional extra ``vocos``).

``barkkit_vocos.checkpoints.save_vocos_checkpoint(folder)`` writes a random-weight checkpoint in the real layout
for tests.
"""
