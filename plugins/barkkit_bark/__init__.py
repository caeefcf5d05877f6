"""barkkit_bark: Bark's three transformers as barkkit stages (``bark.semantic``, ``bark.coarse``, ``bark.fine``).

Modules: ``model`` (the shared GPT / FineGPT with a static KV cache), ``sampling``, ``text`` (tokenizer, long text),
``semantic`` / ``coarse`` / ``fine`` (one stage each), ``checkpoints`` (Suno's and transformers' weight files),
``voices`` (hub presets), ``plugin`` (the hooks).
"""
