"""barkkit_hubert: audio to Bark's semantic tokens with HuBERT and the community quantizer (built-in plugin).

The stage ``hubert.semantic`` (``Audio`` -> ``SemanticTokens``) follows the recipe of
gitmylo/bark-voice-cloning-HuBERT-quantizer (MIT), which bark-gui, Bark Infinity forks and coqui's Bark use: HuBERT
base's hidden state after transformer layer 9 for the raw 16 kHz waveform, then a small LSTM quantizer trained to map
those features to Bark's semantic tokens (one token per 20 ms HuBERT frame). ``barkkit voices make`` uses it for the
``semantic_prompt`` of a voice made from a recording.

Modules: ``quantizer`` (the LSTM quantizer and its two file layouts), ``hubert`` (HuBERT from a transformers folder
or hub id), ``windows`` (long recordings in windows, in bounded memory), ``stage`` (the stage), ``plugin`` (hooks).
For tests, ``quantizer.write_quantizer`` and ``hubert.write_hubert`` write random-weight files in the real formats.
"""
