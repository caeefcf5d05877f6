"""Bark's constants, as the reference implementation (``bark==0.1.5``) defines them."""

SEMANTIC_VOCAB_SIZE = 10_000
SEMANTIC_RATE_HZ = 49.9
CODEBOOK_SIZE = 1024
N_COARSE_CODEBOOKS = 2
N_FINE_CODEBOOKS = 8
COARSE_RATE_HZ = 75
SAMPLE_RATE = 24_000
SAMPLES_PER_FRAME = SAMPLE_RATE // COARSE_RATE_HZ  # 320 audio samples per codec frame
CONTEXT_WINDOW_SIZE = 1024

TEXT_ENCODING_OFFSET = 10_048
SEMANTIC_PAD_TOKEN = 10_000  # also the end-of-sequence logit of the semantic model
TEXT_PAD_TOKEN = 129_595
SEMANTIC_INFER_TOKEN = 129_599
COARSE_SEMANTIC_PAD_TOKEN = 12_048
COARSE_INFER_TOKEN = 12_050

MAX_TOKEN_FRAMES = 270_000
"""The most time steps a token array read from a file may hold: one hour of codec frames at 75 a second (an hour
of semantic tokens is 179,640). Checked from the ``.npy`` headers inside an ``.npz`` before any array is read."""
