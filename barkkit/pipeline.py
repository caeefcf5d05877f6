"""Pipelines: a chain of stages and a decoder, run with one seed, returning every intermediate.

    text -> [semantic stage] -> SemanticTokens -> [coarse stage] -> CoarseTokens -> [fine stage] -> FineTokens
         -> [decoder] -> Audio

A pipeline is built from objects (``Pipeline([stage, ...], decoder)``), from names (``Pipeline.from_spec({...})``,
``load_pipeline(...)``) or from a TOML file; the chain is checked when it is built.
"""

from __future__ import annotations

import numbers
import os
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import torch

from barkkit.devices import check_device
from barkkit.errors import PipelineError, PluginError, WeightsError
from barkkit.files import check_input_file
from barkkit.plugins import Plugins, Registry, load_plugins
from barkkit.stage import Decoder, Stage
from barkkit.tokens import Audio, CoarseTokens, FineTokens, SemanticTokens, Tokens, kind_name
from barkkit.voice import Voice, VoiceLike, save_token_file
from barkkit.weights import DEFAULT_MODEL

__all__ = ["Pipeline", "Generation", "load_pipeline", "PipelineProgress", "DEFAULT_SPEC", "MODES", "check_seed"]

MODES = ("exact", "fast")
DEFAULT_SPEC: dict[str, str] = {
    "semantic": "bark.semantic",
    "coarse": "bark.coarse",
    "fine": "bark.fine",
    "decoder": "encodec",
}
STAGE_SLOTS = ("semantic", "coarse", "fine")

T = TypeVar("T")

PipelineProgress = Callable[[str, int, int], None]
"""``progress(step_name, done, total)``: called by each step of a run as it advances."""

_KIND_BY_NAME = {"text": str, "semantic": SemanticTokens, "coarse": CoarseTokens, "fine": FineTokens, "audio": Audio}
_ATTRIBUTE = {str: "text", SemanticTokens: "semantic", CoarseTokens: "coarse", FineTokens: "fine", Audio: "audio"}


@dataclass
class Generation:
    """Everything one run made: the input and each intermediate (None where the run did not reach it)."""

    text: str | None = None
    semantic: SemanticTokens | None = None
    coarse: CoarseTokens | None = None
    fine: FineTokens | None = None
    audio: Audio | None = None
    seed: int | None = None
    voice: Voice | None = field(default=None, repr=False)

    @property
    def sample_rate(self) -> int | None:
        return self.audio.sample_rate if self.audio is not None else None

    def to_voice(self) -> Voice:
        """This generation as a voice, to continue from it."""
        return Voice.from_generation(self)

    def save_voice(self, path: str | os.PathLike) -> Path:
        """Write the tokens as a Bark voice file (.npz with the three voice keys)."""
        return self.to_voice().save(path)

    def save_tokens(self, path: str | os.PathLike) -> Path:
        """Write whichever tokens this run made under the voice keys (a full run's file is a voice)."""
        tokens = {"semantic_prompt": self.semantic, "coarse_prompt": self.coarse, "fine_prompt": self.fine}
        if all(value is None for value in tokens.values()):
            raise PipelineError("this generation holds no tokens to save")
        return save_token_file(path, tokens)

    def save_audio(self, path: str | os.PathLike, **options: Any) -> Path:
        """Write the audio (see ``barkkit.audio.save_audio`` for formats and options)."""
        from barkkit.audio import save_audio

        if self.audio is None:
            raise PipelineError("this generation has no audio: run the pipeline through its decoder")
        return save_audio(path, self.audio, **options)


def _kind(until: str | type | None) -> type | None:
    if until is None or isinstance(until, type):
        return until
    try:
        return _KIND_BY_NAME[until]
    except KeyError:
        raise PipelineError(f"unknown kind '{until}'; use one of {', '.join(_KIND_BY_NAME)}") from None


def check_seed(seed: Any) -> int:
    """A seed torch's generators take: a whole number from 0 to 2**64 - 1. torch also takes negative numbers, and
    wraps them (-5 is 2**64 - 5): refused, so that a mistyped seed is not silently another one."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2**64:
        raise PipelineError(f"seed must be a whole number from 0 to 2**64 - 1, got {seed!r}")
    return int(seed)


def _new_seed() -> int:
    return int.from_bytes(os.urandom(4), "little") & 0x7FFF_FFFF


class Pipeline:
    """An ordered chain of stages plus an optional decoder, checked when built.

    Args:
        stages: ``Stage`` instances; each must consume what the previous one produces.
        decoder: a ``Decoder`` for fine tokens, or None for a pipeline that stops at tokens.
        plugins: the plugins that resolve voice names (loaded from entry points when None).
        device: where the run's random generator lives (the stages' device).
    """

    def __init__(
        self,
        stages: Sequence[Stage],
        decoder: Decoder | None = None,
        *,
        plugins: Plugins | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.stages = list(stages)
        self.decoder = decoder
        self._plugins = plugins
        self.device = check_device(device)
        if not self.steps:
            raise PipelineError("a pipeline needs at least one stage or a decoder")
        _check_chain(self.steps)

    @property
    def steps(self) -> list[Stage | Decoder]:
        return [*self.stages, *([self.decoder] if self.decoder is not None else [])]

    @property
    def plugins(self) -> Plugins:
        if self._plugins is None:
            self._plugins = load_plugins()
        return self._plugins

    def __repr__(self) -> str:
        return f"Pipeline({' -> '.join(step.name for step in self.steps)})"

    # building from names ---------------------------------------------------------------------------------------
    @classmethod
    def from_spec(
        cls,
        spec: Mapping[str, Any] | str | os.PathLike,
        *,
        plugins: Plugins | None = None,
        **overrides: Any,
    ) -> "Pipeline":
        """Build a pipeline from names.

        ``spec`` is a mapping or a TOML file (keys at the top level or under ``[pipeline]``):

        - ``model`` (default ``bark-small``), ``device`` (``cpu``), ``mode`` (``exact`` or ``fast``);
        - ``semantic``, ``coarse``, ``fine``: a registered stage name, a table ``{name = ..., model = ...}``, or
          ``false`` to leave the slot out (a pipeline may start or stop anywhere);
        - ``decoder``: a decoder name or table, or ``false`` for none. Left out, the default decoder is used when its
          weights are found, and otherwise left out with a warning (the pipeline then stops at fine tokens);
        - or ``stages``: an explicit list of stage names/tables, for chains other than Bark's three slots.

        Keyword ``overrides`` replace keys of the spec (``None`` values are ignored).
        """
        if not isinstance(spec, Mapping):
            spec = read_spec_file(Path(spec))
        spec = {**spec, **{key: value for key, value in overrides.items() if value is not None}}
        known = {"model", "device", "mode", "stages", "decoder", *STAGE_SLOTS}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise PipelineError(f"unknown pipeline key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        model = spec.get("model", DEFAULT_MODEL)
        device = check_device(spec.get("device", "cpu"))
        mode = spec.get("mode", "exact")
        if mode not in MODES:
            raise PipelineError(f"unknown mode '{mode}'; use one of {', '.join(MODES)}")
        plugins = plugins or load_plugins()

        if "stages" in spec:
            if any(slot in spec for slot in STAGE_SLOTS):
                raise PipelineError("give either 'stages' or the slots semantic/coarse/fine, not both")
            stage_entries = list(spec["stages"])
        else:
            stage_entries = [spec.get(slot, DEFAULT_SPEC[slot]) for slot in STAGE_SLOTS]
        decoder_entry = spec.get("decoder", DEFAULT_SPEC["decoder"])

        def resolve(entry: Any, registry: Registry[T]) -> tuple[T, Any]:
            name, table = _entry(entry)
            return registry.get(name), table.get("model", model)

        stage_steps = [resolve(entry, plugins.stages) for entry in stage_entries if entry is not False]
        decoder_step = resolve(decoder_entry, plugins.decoders) if decoder_entry is not False else None
        # Check the chain from the classes before loading any weights.
        _check_chain([factory for factory, _ in stage_steps] + ([decoder_step[0]] if decoder_step else []))

        stages = [factory.load(step_model, device=device, mode=mode) for factory, step_model in stage_steps]
        decoder = None
        if decoder_step:
            factory, step_model = decoder_step
            try:
                decoder = factory.load(step_model, device=device, mode=mode)
            except WeightsError as exc:
                if "decoder" in spec:  # asked for by name: its weights are required
                    raise
                # The default decoder is optional: a folder with only the stages' weights still makes tokens.
                warnings.warn(f"no audio decoder: {exc}; this pipeline stops at fine tokens", stacklevel=2)
        return cls(stages, decoder, plugins=plugins, device=device)

    # running ---------------------------------------------------------------------------------------------------
    def options(self) -> dict[str, Any]:
        """Every option the stages accept, with its default (first stage's default where two share a name)."""
        merged: dict[str, Any] = {}
        for step in self.steps:
            for name, default in getattr(step, "options", {}).items():
                merged.setdefault(name, default)
        return merged

    def _plan(self, value: Any, until: str | type | None) -> list[Stage | Decoder]:
        start_kind = type(value)
        if isinstance(value, Generation):
            raise PipelineError("cannot run on a Generation; give the value to go on from, e.g. generation.semantic")
        if start_kind not in _ATTRIBUTE:
            raise PipelineError(
                f"cannot run on a {start_kind.__name__}; give text or SemanticTokens, CoarseTokens, FineTokens"
            )
        steps = self.steps
        try:
            first = next(i for i, step in enumerate(steps) if step.consumes is start_kind)
        except StopIteration:
            raise PipelineError(f"no step of {self!r} consumes {kind_name(start_kind)}") from None
        until_kind = _kind(until)
        if until_kind is None:
            return steps[first:]
        if until_kind is start_kind:
            return []
        for last in range(first, len(steps)):
            if steps[last].produces is until_kind:
                return steps[first : last + 1]
        raise PipelineError(f"{self!r} cannot go from {kind_name(start_kind)} to {kind_name(until_kind)}")

    def _route(self, plan: Sequence[Stage | Decoder], options: Mapping[str, Any]) -> list[dict[str, Any]]:
        accepted = {name for step in plan for name in getattr(step, "options", {})}
        unknown = sorted(set(options) - accepted)
        if unknown:
            raise PipelineError(
                f"unknown option(s) {', '.join(unknown)} for this run; accepted: {', '.join(sorted(accepted)) or 'none'}"
            )
        return [{k: v for k, v in options.items() if k in getattr(step, "options", {})} for step in plan]

    def run(
        self,
        value: Any,
        *,
        voice: VoiceLike | None = None,
        seed: int | None = None,
        until: str | type | None = None,
        progress: PipelineProgress | None = None,
        **options: Any,
    ) -> Generation:
        """Run the part of the chain that starts at ``value``'s kind and ends at ``until`` (default: the end).

        ``value`` is text or a token object; ``until`` a kind name ("semantic", "coarse", "fine", "audio").
        All randomness comes from one generator seeded with ``seed`` (a fresh random seed when None, recorded in
        the result), so the same seed, inputs and options give the same result.
        """
        if isinstance(value, str) and not value.strip():
            raise PipelineError("text is empty; give some words to speak")
        if isinstance(value, Tokens) and len(value) == 0:  # a stage would blame itself ("stopped at once")
            raise PipelineError(f"the {value.kind} tokens to start from are empty (shape {value.shape}); give at least one step")
        plan = self._plan(value, until)
        step_options = self._route(plan, options)
        resolved_voice = Voice.load(voice, plugins=self.plugins) if voice is not None else None
        seed = _new_seed() if seed is None else check_seed(seed)
        generator = torch.Generator(device=self.device).manual_seed(seed)
        generation = Generation(seed=seed, voice=resolved_voice)
        setattr(generation, _ATTRIBUTE[type(value)], value)
        for step, kwargs in zip(plan, step_options):
            step_progress = partial(progress, step.name) if progress else None
            if isinstance(step, Decoder):
                value = step.decode(value, progress=step_progress)
            else:
                value = step.run(value, voice=resolved_voice, generator=generator, progress=step_progress, **kwargs)
            _check_output(step, value)
            setattr(generation, _ATTRIBUTE[step.produces], value)
        return generation

    def generate(
        self,
        text: str,
        voice: VoiceLike | None = None,
        seed: int | None = None,
        *,
        progress: PipelineProgress | None = None,
        **options: Any,
    ) -> Generation:
        """Text to audio (or as far as this pipeline goes): ``run(text, ...)``."""
        if not isinstance(text, str):
            raise PipelineError(f"text must be a string, got {type(text).__name__}")
        return self.run(text, voice=voice, seed=seed, progress=progress, **options)

    def generate_batch(
        self,
        texts: Sequence[str],
        voices: VoiceLike | None | list[VoiceLike | None] | tuple[VoiceLike | None, ...] = None,
        seeds: int | None | list[int | None] | tuple[int | None, ...] = None,
        *,
        until: str | type | None = None,
        progress: PipelineProgress | None = None,
        **options: Any,
    ) -> list[Generation]:
        """Several texts through each stage together; each keeps its own length, voice and seed.

        ``voices`` and ``seeds`` are one value for all or one per text. An int ``seeds`` gives text i the seed
        ``seeds + i``.
        """
        if isinstance(texts, str):  # list("Hello") would be five one-letter texts
            raise PipelineError("generate_batch takes a list of texts, not one string; use generate(text) or [text]")
        texts = list(texts)
        if not texts:
            return []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise PipelineError(f"text {i + 1} of the batch must be a string, got {type(text).__name__}")
            if not text.strip():
                raise PipelineError(f"text {i + 1} of the batch is empty; give some words to speak")
        n = len(texts)
        voice_list = list(voices) if isinstance(voices, (list, tuple)) else [voices] * n
        if isinstance(seeds, (list, tuple)):
            seed_list = [(_new_seed() if s is None else check_seed(s)) for s in seeds]
        else:
            base = _new_seed() if seeds is None else check_seed(seeds)
            seed_list = [check_seed(base + i) for i in range(n)]
        for what, given, one in (("voices", voice_list, "one voice for all"),
                                 ("seeds", seed_list, "one int for all (text i gets seeds + i)")):
            if len(given) != n:
                raise PipelineError(f"got {n} texts but {len(given)} {what}; give one per text, or {one}")
        plan = self._plan(texts[0], until)
        step_options = self._route(plan, options)
        resolved = [Voice.load(v, plugins=self.plugins) if v is not None else None for v in voice_list]
        generators = [torch.Generator(device=self.device).manual_seed(s) for s in seed_list]
        generations = [Generation(text=t, seed=s, voice=v) for t, s, v in zip(texts, seed_list, resolved)]
        values: list[Any] = texts
        for step, kwargs in zip(plan, step_options):
            step_progress = partial(progress, step.name) if progress else None
            if isinstance(step, Decoder):
                values = [step.decode(value, progress=step_progress) for value in values]
            else:
                values = step.run_batch(values, voices=resolved, generators=generators, progress=step_progress, **kwargs)
            for generation, value in zip(generations, values, strict=True):
                _check_output(step, value)
                setattr(generation, _ATTRIBUTE[step.produces], value)
        return generations


def _entry(entry: Any) -> tuple[str, Mapping[str, Any]]:
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping) and isinstance(entry.get("name"), str):
        extra = sorted(set(entry) - {"name", "model"})
        if extra:
            raise PipelineError(f"unknown key(s) {', '.join(extra)} for '{entry['name']}'; a step takes name and model")
        return entry["name"], entry
    raise PipelineError(f"a pipeline step must be a name or a table with a name, got {entry!r}")


def _check_chain(steps: Sequence[Any]) -> None:
    """Each step (a class or an instance) must consume what the one before it produces."""
    for before, after in zip(steps, steps[1:]):
        if before.produces is not after.consumes:
            raise PipelineError(
                f"'{before.name}' produces {kind_name(before.produces)} tokens but '{after.name}' consumes "
                f"{kind_name(after.consumes)}; put a stage between them that turns one into the other"
            )


def _check_output(step: Stage | Decoder, value: Any) -> None:
    if not isinstance(value, step.produces):
        raise PluginError(
            f"'{step.name}' returned {type(value).__name__}, but declares that it produces {kind_name(step.produces)}"
        )


def read_spec_file(path: Path) -> dict[str, Any]:
    path = check_input_file(path, "pipeline spec file", PipelineError)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: not a valid TOML pipeline spec ({exc})") from None
    table = data.get("pipeline", data)
    if not isinstance(table, Mapping):
        raise PipelineError(f"{path}: 'pipeline' must be a table ([pipeline] with keys), got {type(table).__name__}")
    return dict(table)


def load_pipeline(
    model: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    mode: str = "exact",
    *,
    plugins: Plugins | None = None,
    **steps: Any,
) -> Pipeline:
    """The standard Bark pipeline for ``model`` (a name, hub id or local folder; default ``bark-small``).

    ``steps`` replace the default step of a slot by name: ``load_pipeline("bark", fine="my_plugin.fast_fine")``,
    or leave it out with ``False``.
    """
    spec: dict[str, Any] = {"model": str(model) if model is not None else DEFAULT_MODEL, "device": str(device), "mode": mode}
    spec.update(steps)
    return Pipeline.from_spec(spec, plugins=plugins)
