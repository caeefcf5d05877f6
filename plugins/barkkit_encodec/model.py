"""EnCodec 24 kHz (Défossez et al., 2022) in plain torch: SEANet encoder and decoder, residual vector quantizer.

Why not the ``encodec`` package: it imports torchaudio at import time, and torchaudio's wheels are built for one
torch release each, so a user on a newer torch could not decode at all. Why not transformers' ``EncodecModel``: it
takes seconds to import and build, and recomputes weight norm on every call. This module needs torch only, folds
weight norm into plain weights when loading, and adds a chunked ("streaming") decode with bounded memory.

Module and parameter names follow transformers' ``EncodecModel`` (``decoder.layers.3.conv.weight``, ...) so its
checkpoints load with a plain rename; ``barkkit_encodec.checkpoints`` converts the original ``encodec`` format.

Shapes: B batch, C channels, T codec frames (75 per second), n audio samples (320 per frame).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CodecConfig", "Codec", "SEANetEncoder", "SEANetDecoder"]


@dataclass(frozen=True)
class CodecConfig:
    """The architecture of EnCodec's causal 24 kHz model (the defaults). Field names follow transformers'
    ``EncodecConfig``, so its ``config.json`` (or a Bark checkpoint's ``codec_config``) maps straight onto it."""

    sampling_rate: int = 24_000
    audio_channels: int = 1
    hidden_size: int = 128  # latent dimension = codebook dimension
    num_filters: int = 32  # width of the outermost convolutions; doubles at each downsampling
    num_residual_layers: int = 1
    upsampling_ratios: tuple[int, ...] = (8, 5, 4, 2)  # decoder order; the encoder uses them reversed
    kernel_size: int = 7
    last_kernel_size: int = 7
    residual_kernel_size: int = 3
    dilation_growth_rate: int = 2
    compress: int = 2  # residual branches are `dim // compress` wide
    num_lstm_layers: int = 2
    codebook_size: int = 1024
    num_quantizers: int = 8  # codebooks kept: 8 is 6 kbps, what Bark uses (the checkpoint holds 32)
    target_bandwidths: tuple[float, ...] = field(default=(1.5, 3.0, 6.0, 12.0, 24.0))

    @property
    def hop_length(self) -> int:
        """Audio samples per codec frame (320 at 24 kHz)."""
        return math.prod(self.upsampling_ratios)

    @property
    def frame_rate(self) -> int:
        return math.ceil(self.sampling_rate / self.hop_length)


def _pad1d_reflect(x: torch.Tensor, left: int, right: int) -> torch.Tensor:
    """Reflect padding that also works on inputs shorter than the padding (zeros are added first, as EnCodec does)."""
    length = x.shape[-1]
    extra = max(left, right) - length + 1 if length <= max(left, right) else 0
    if extra:
        x = F.pad(x, (0, extra))
    padded = F.pad(x, (left, right), mode="reflect")
    return padded[..., : padded.shape[-1] - extra]


class CausalConv1d(nn.Module):
    """Conv1d with all padding on the left (reflected), plus the right padding that completes a strided last window."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation)
        self.stride = stride
        self.effective_kernel = (kernel_size - 1) * dilation + 1
        self.padding = self.effective_kernel - stride  # left padding of a causal conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, n) -> (B, C_out, ceil(n / stride))
        length = x.shape[-1]
        n_frames = math.ceil((length - self.effective_kernel + self.padding) / self.stride + 1)
        extra = (n_frames - 1) * self.stride + self.effective_kernel - self.padding - length
        return self.conv(_pad1d_reflect(x, self.padding, extra))

    def stream(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """One chunk of a longer input (stride 1 only): the first chunk gets the reflect padding a one-pass forward
        applies; later chunks are prefixed with the inputs of the previous chunk that their windows reach back to."""
        past = cache.get(self)
        x = _pad1d_reflect(x, self.padding, 0) if past is None else torch.cat([past, x], dim=-1)
        cache[self] = x[..., x.shape[-1] - self.padding :]
        return self.conv(x)


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d whose overhang (kernel - stride samples) is cut on the right: output n_in x stride samples."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int):
        super().__init__()
        self.conv = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride)
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, T) -> (B, C_out, T * stride)
        return self.conv(x)[..., : x.shape[-1] * self.stride]

    def stream(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """One chunk: the overhang that a one-pass forward would add to the next chunk's first samples is kept and
        added there (without its bias, which the next chunk's own output already holds)."""
        y = self.conv(x)  # (B, C_out, (T - 1) * stride + kernel)
        keep = x.shape[-1] * self.stride
        tail = cache.get(self)
        if tail is not None:
            y = torch.cat([y[..., : tail.shape[-1]] + tail, y[..., tail.shape[-1] :]], dim=-1)
        bias = self.conv.bias[:, None] if self.conv.bias is not None else 0.0
        cache[self] = y[..., keep:] - bias
        return y[..., :keep]


class SkipLSTM(nn.Module):
    """LSTM over time on conv-layout input, with a residual connection."""

    def __init__(self, dim: int, num_layers: int):
        super().__init__()
        self.lstm = nn.LSTM(dim, dim, num_layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stream(x, {})

    def stream(self, x: torch.Tensor, cache: dict) -> torch.Tensor:  # (B, C, T) -> (B, C, T)
        x = x.permute(2, 0, 1)  # (T, B, C)
        y, cache[self] = self.lstm(x, cache.get(self))
        return (y + x).permute(1, 2, 0)


class ResnetBlock(nn.Module):
    """SEANet residual block: ELU, conv k=3 (dilated) to dim // compress, ELU, conv k=1 back; a k=1 conv shortcut."""

    def __init__(self, config: CodecConfig, dim: int, dilation: int):
        super().__init__()
        hidden = dim // config.compress
        self.block = nn.ModuleList(
            [
                nn.ELU(),
                CausalConv1d(dim, hidden, config.residual_kernel_size, dilation=dilation),
                nn.ELU(),
                CausalConv1d(hidden, dim, 1),
            ]
        )
        self.shortcut = CausalConv1d(dim, dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        for layer in self.block:
            x = layer(x)
        return self.shortcut(residual) + x

    def stream(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        residual = x
        for layer in self.block:
            x = _stream(layer, x, cache)
        return self.shortcut.stream(residual, cache) + x


def _stream(layer: nn.Module, x: torch.Tensor, cache: dict) -> torch.Tensor:
    return layer.stream(x, cache) if hasattr(layer, "stream") else layer(x)


class SEANetEncoder(nn.Module):
    """Audio (B, channels, n) -> latents (B, hidden_size, ceil(n / hop_length))."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        layers: list[nn.Module] = [CausalConv1d(config.audio_channels, config.num_filters, config.kernel_size)]
        width = config.num_filters
        for ratio in reversed(config.upsampling_ratios):
            layers += [ResnetBlock(config, width, config.dilation_growth_rate**j) for j in range(config.num_residual_layers)]
            layers += [nn.ELU(), CausalConv1d(width, width * 2, kernel_size=ratio * 2, stride=ratio)]
            width *= 2
        layers += [SkipLSTM(width, config.num_lstm_layers), nn.ELU()]
        layers += [CausalConv1d(width, config.hidden_size, config.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SEANetDecoder(nn.Module):
    """Latents (B, hidden_size, T) -> audio (B, channels, T x hop_length). Causal throughout, so it streams."""

    def __init__(self, config: CodecConfig):
        super().__init__()
        width = config.num_filters * 2 ** len(config.upsampling_ratios)
        layers: list[nn.Module] = [CausalConv1d(config.hidden_size, width, config.kernel_size)]
        layers += [SkipLSTM(width, config.num_lstm_layers)]
        for ratio in config.upsampling_ratios:
            layers += [nn.ELU(), CausalConvTranspose1d(width, width // 2, kernel_size=ratio * 2, stride=ratio)]
            width //= 2
            layers += [ResnetBlock(config, width, config.dilation_growth_rate**j) for j in range(config.num_residual_layers)]
        layers += [nn.ELU(), CausalConv1d(width, config.audio_channels, config.last_kernel_size)]
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x

    def stream(self, x: torch.Tensor, cache: dict) -> torch.Tensor:
        """Decode one chunk of a longer sequence; ``cache`` (a dict, empty at the start) carries the state."""
        for layer in self.layers:
            x = _stream(layer, x, cache)
        return x


class Codec(nn.Module):
    """EnCodec: ``encode`` audio to codes (K, B, T); ``decode`` codes to audio, in one pass or in chunks.

    ``codebooks`` (K, codebook_size, hidden_size) holds the first K residual codebooks (K = 8 at 6 kbps).
    """

    def __init__(self, config: CodecConfig = CodecConfig()):
        super().__init__()
        self.config = config
        self.encoder = SEANetEncoder(config)
        self.decoder = SEANetDecoder(config)
        self.register_buffer("codebooks", torch.zeros(config.num_quantizers, config.codebook_size, config.hidden_size))

    # quantizer -------------------------------------------------------------------------------------------------
    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes (K, B, T) -> latents (B, hidden_size, T): the sum of each codebook's vectors, in codebook order."""
        latents = torch.zeros((), device=codes.device, dtype=self.codebooks.dtype)
        for k in range(codes.shape[0]):
            latents = latents + F.embedding(codes[k], self.codebooks[k])  # (B, T, D)
        return latents.transpose(1, 2)

    def quantize(self, latents: torch.Tensor, num_quantizers: int | None = None) -> torch.Tensor:
        """Latents (B, hidden_size, T) -> codes (K, B, T) by residual nearest-neighbour search."""
        residual = latents.transpose(1, 2)  # (B, T, D)
        codes = []
        for embed in self.codebooks[: num_quantizers or self.config.num_quantizers]:
            flat = residual.reshape(-1, residual.shape[-1])  # (B*T, D)
            # The same expression as EnCodec, so near-ties resolve the same way.
            distance = -(flat.pow(2).sum(1, keepdim=True) - 2 * flat @ embed.t() + embed.t().pow(2).sum(0, keepdim=True))
            indices = distance.max(dim=-1).indices.view(residual.shape[:-1])  # (B, T)
            residual = residual - F.embedding(indices, embed)
            codes.append(indices)
        return torch.stack(codes)

    # audio -----------------------------------------------------------------------------------------------------
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """Audio (B, channels, n) at ``sampling_rate`` -> codes (K, B, ceil(n / hop_length))."""
        return self.quantize(self.encoder(audio))

    def decode(
        self,
        codes: torch.Tensor,
        *,
        chunk_frames: int | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Codes (K, B, T) -> audio (B, channels, T x hop_length).

        With ``chunk_frames``, the decoder runs on chunks of that many frames, carrying each layer's state from one
        chunk to the next (convolution inputs, transposed-convolution overhangs, LSTM state): memory is bounded by
        the chunk and the result is the one-pass result up to float rounding.
        """
        total = codes.shape[-1]
        if total == 0:  # convolutions cannot run on nothing; no frames is no audio
            return self.codebooks.new_zeros(codes.shape[1], self.config.audio_channels, 0)
        if not chunk_frames or total <= chunk_frames:
            audio = self.decoder(self.dequantize(codes))
            if progress:
                progress(total, total)
            return audio
        # The first chunk must be longer than the widest left padding (kernel_size - 1 frames) so that its
        # reflect padding matches a one-pass decode.
        chunk_frames = max(chunk_frames, self.config.kernel_size)
        cache: dict = {}
        pieces = []
        for start in range(0, total, chunk_frames):
            chunk = codes[..., start : start + chunk_frames]
            pieces.append(self.decoder.stream(self.dequantize(chunk), cache))
            if progress:
                progress(min(start + chunk_frames, total), total)
        return torch.cat(pieces, dim=-1)
