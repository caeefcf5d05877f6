"""What the three Bark stages share: loading their model, the run mode, and option checks."""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import field, fields
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from barkkit.errors import PipelineError
from barkkit.stage import Progress, Stage
from barkkit_bark.checkpoints import Kind, load_model
from barkkit_bark.engine import DECODE_STEPS
from barkkit_bark.model import GPT, FineGPT

if TYPE_CHECKING:
    from barkkit.voice import Voice

MODES = ("exact", "fast")
# what exact mode multiplies through oneDNN's fp32 linear, per model kind (``barkkit_bark.certified``)
ONEDNN_USE = {"fine": "fine passes whose draws are certain", "coarse": "windows whose draws are certain and checks",
              "text": "checks of drafts"}


class BarkStage(Stage):
    """A stage backed by one of Bark's transformers (``kind``: "text", "coarse" or "fine").

    ``mode`` "exact" gives the reference's tokens (on a CPU its causal models decode with an int8 twin drafting
    tokens that the fp32 model checks, ``barkkit_bark.speculative``); "fast" trades exactness for speed: int8
    weights and the batched engine (``barkkit_bark.fast`` lists every change and how it was measured). Fast mode
    converts ``model`` in place.
    """

    kind: ClassVar[Kind]
    n_draft: int = 8  # exact mode on a CPU: tokens the int8 twin drafts per fp32 pass (0: plain one-token decode)
    # fast mode's causal decode steps: "eager", "compile" (torch.compile) or "cuda_graphs"; None: CUDA graphs on
    # CUDA, eager elsewhere (on this project's CPU a compiled step measured no faster than the eager int8 one)
    fast_decode: str | None = None

    def __init__(self, model: GPT | FineGPT, *, mode: str = "exact", source: str | None = None) -> None:
        check_mode(mode)
        self.draft: GPT | None = None  # exact mode's int8 twin (barkkit_bark.speculative), causal models on a CPU
        # exact mode on a CPU: the model on oneDNN's fp32 kernels (weights shared) where timed faster: it checks the
        # drafts, and the fine passes and coarse windows it computes are kept where every draw is certain
        self.twin: GPT | FineGPT | None = None
        # what this stage runs on, for ``barkkit info``: kernels chosen by the CPU's features (barkkit_bark.kernels)
        self.kernels: dict[str, str] = {"linears": "fp32", "attention": "fp32"}
        if mode == "fast":
            from barkkit_bark.fast import prepare_fast

            model = prepare_fast(model)
            self.kernels = dict(model.kernels)
        elif isinstance(model, GPT) and model.lm_head.weight.device.type == "cpu":
            from barkkit_bark.certified import causal_twin
            from barkkit_bark.speculative import draft_model, drafting_pays

            self.draft = draft_model(model)
            pays = drafting_pays(model, self.draft)
            if not pays:
                self.n_draft = 0  # the twin is no faster here: decode one fp32 token at a time, as the reference
            # the semantic stage uses the twin to check drafts; the coarse stage also runs whole windows on it
            self.twin = causal_twin(model, self.n_draft) if pays or self.kind == "coarse" else None
            kernel = self.draft.lm_head.decode_kernel
            self.kernels["decode"] = (f"fp32, int8 twin drafts ({kernel})" if pays
                                      else f"fp32 (an {kernel} twin is no faster here)")
        elif isinstance(model, FineGPT) and model.transformer.wpe.weight.device.type == "cpu":
            from barkkit_bark.certified import fine_twin

            self.twin = fine_twin(model)
        if self.twin is not None:
            self.kernels["linears"] = f"fp32: oneDNN for {ONEDNN_USE[self.kind]}, else PyTorch's default"
        self.model = model
        self.mode = mode
        self.source = source

    @classmethod
    def kernel_plan(cls, mode: str = "exact", device: str | torch.device = "cpu") -> dict[str, str]:
        """The kernels ``__init__`` will choose here (``barkkit_bark.kernels``), without loading weights."""
        from barkkit_bark.kernels import (
            cpu_features,
            decode_kernel_for,
            fast_kernels,
            forced_decode_kernel,
            native_attention_for,
        )
        from barkkit_bark.native import described

        check_mode(mode)
        if torch.device(device).type != "cpu":
            precision = "bf16" if mode == "fast" else "fp32"
            return {"linears": precision, "attention": precision}
        features = cpu_features()
        causal = cls.kind != "fine"
        int8 = decode_kernel_for(features)
        if mode == "fast":
            decode = forced_decode_kernel() or int8 or "int_mm or fp32, whichever is timed faster at load"
            native = described(causal, None, native_attention_for(features), blocks=decode.startswith("fbgemm"))
            return fast_kernels(features, decode if causal else None, native)
        plan = {"linears": f"fp32: oneDNN for {ONEDNN_USE[cls.kind]} where timed faster at load, else PyTorch's default",
                "attention": "fp32"}
        if causal:
            plan["decode"] = f"fp32; an int8 twin ({int8 or 'int_mm'}) drafts 8 tokens a pass where it is timed faster at load"
        return plan

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, device: str | torch.device = "cpu", mode: str = "exact") -> "BarkStage":
        """Load the stage's weights from a folder (Suno's or transformers' format), ``bark``/``bark-small`` or a hub id."""
        check_mode(mode)
        return cls(load_model(model, cls.kind, device=device), mode=mode, source=None if model is None else str(model))

    def run_batch(
        self,
        values: Sequence[Any],
        *,
        voices: Sequence["Voice | None"],
        generators: Sequence[torch.Generator],
        progress: Progress | None = None,
        **options: Any,
    ) -> list[Any]:
        """Several inputs, each with its own voice and generator.

        Fast mode runs them together through the row engine (``barkkit_bark.engine``; each row gets what it would
        alone). Exact mode runs them one at a time, so each keeps the reference's tokens.
        """
        if self.exact:
            return super().run_batch(values, voices=voices, generators=generators, progress=progress, **options)
        return self.run_fast_batch(values, voices=voices, generators=generators, progress=progress, **options)

    @abstractmethod
    def run_fast_batch(self, values: Sequence[Any], *, voices: Sequence["Voice | None"],
                       generators: Sequence[torch.Generator], progress: Progress | None = None,
                       **options: Any) -> list[Any]:
        """Fast mode's ``run_batch``: every row through the row engine together."""

    @property
    def device(self) -> torch.device:
        return self.model.transformer.wpe.weight.device

    @property
    def decode_steps(self) -> str:
        """How fast mode runs its decode steps: ``fast_decode``, or by default "cuda_graphs" on CUDA, else "eager"."""
        how = self.fast_decode or ("cuda_graphs" if self.device.type == "cuda" else "eager")
        if how not in DECODE_STEPS:
            raise PipelineError(f"unknown fast_decode '{how}'; use one of {', '.join(DECODE_STEPS)}")
        if how == "cuda_graphs" and self.device.type != "cuda":
            raise PipelineError(f"fast_decode 'cuda_graphs' needs a CUDA device, the model is on {self.device}; "
                                "use 'compile' or 'eager'")
        return how

    @property
    def exact(self) -> bool:
        return self.mode == "exact"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.source!r}, mode={self.mode!r})"


def option_field(default: Any, help: str) -> Any:
    """A field of a stage's ``Options`` dataclass: its default, and the help line the CLI shows for it."""
    return field(default=default, metadata={"help": help})


def top_k_field() -> Any:
    """``top_k``, an option of both causal stages (one ``--top-k`` flag): its default and help, stated once."""
    return option_field(None, "Sample only among the k most likely tokens.")


def top_p_field() -> Any:
    """``top_p``, an option of both causal stages (one ``--top-p`` flag): its default and help, stated once."""
    return option_field(None, "Nucleus sampling: the smallest set with this much probability.")


def defaults_of(options: type) -> dict[str, Any]:
    """An ``Options`` dataclass as ``Stage.options``: every option's name and default, stated once, in the class."""
    return {f.name: f.default for f in fields(options)}


def help_of(options: type) -> dict[str, str]:
    """An ``Options`` dataclass's help lines (``Stage.option_help``), for the command line's flags."""
    return {f.name: f.metadata.get("help", "") for f in fields(options)}


def make_options(options: type, given: dict[str, Any]) -> Any:
    """``options(**given)``, validated by the dataclass; an option it does not have is a PipelineError."""
    unknown = sorted(set(given) - {f.name for f in fields(options)})
    if unknown:
        raise PipelineError(f"unknown option {unknown[0]!r}; this stage takes {', '.join(f.name for f in fields(options))}")
    return options(**given)


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise PipelineError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")


def check_sampling_options(top_k: Any, top_p: Any) -> None:
    """Clear errors for top-k / top-p values the reference would crash on or silently misuse."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise PipelineError(f"top_k must be a whole number of at least 1 (or None for off), got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        raise PipelineError(f"top_p must be a probability above 0 and at most 1 (or None for off), got {top_p!r}")
