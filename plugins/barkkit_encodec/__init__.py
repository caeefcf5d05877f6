"""barkkit_encodec: the EnCodec 24 kHz decoder and encoder, in plain torch (built-in barkkit plugin).

For tests: ``barkkit_encodec.checkpoints.write_encodec_checkpoint(folder)`` writes a random-weight checkpoint in the
original format (torch only); ``save_encodec_checkpoint(folder)`` also returns the ``encodec`` package's model with
the same weights, for Bark's reference ``codec_decode``.
"""
