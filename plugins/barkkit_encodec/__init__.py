"""barkkit_encodec: the EnCodec 24 kHz decoder and encoder, in plain torch (built-in barkkit plugin).

``barkkit_encodec.checkpoints.save_encodec_checkpoint(folder)`` writes a random-weight checkpoint in the original
format for tests.
"""
