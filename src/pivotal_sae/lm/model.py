"""A Hugging Face transformers model seen through SAELens hook names.

`LanguageModel` reads activations at any set of hooks and stops the forward pass as soon as the
last of them has been seen: a private exception raised from a module hook unwinds out of the
model, so the blocks after the deepest hook never run. Patching for ablation lives in
`pivotal_sae.lm.patching` and is exposed here as methods.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import nn

from pivotal_sae.errors import UserError
from pivotal_sae.lm.hooks import HookMap, HookSite
from pivotal_sae.runs import DTYPES, parse_dtype

__all__ = ["DTYPES", "LanguageModel", "ReadsHook", "hooked", "parse_dtype"]

if TYPE_CHECKING:
    from pivotal_sae.lm.patching import PatchBaseline


class ReadsHook(Protocol):
    """What the model needs to know of an SAE to check it fits (`saes.sae.Sae` is one); the
    model side imports no SAE code."""

    @property
    def hook_name(self) -> str: ...

    @property
    def hf_hook_name(self) -> str | None: ...

    @property
    def d_in(self) -> int: ...

    @property
    def label(self) -> str: ...


class _EarlyExit(Exception):
    """Raised from a hook once every wanted activation is in hand, to skip the remaining blocks."""


def _first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple | list) else output


def _hidden_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@contextlib.contextmanager
def hooked(
    site: HookSite,
    fn: Callable[[torch.Tensor], torch.Tensor | None],
) -> Iterator[None]:
    """Call `fn` on the site's tensor during forward passes; a returned tensor replaces it."""
    if site.where == "output":

        def forward_hook(module: nn.Module, args: Any, output: Any) -> Any:
            new = fn(_first(output))
            if new is None:
                return None
            if isinstance(output, tuple):
                return (new, *output[1:])
            return new

        handle = site.module.register_forward_hook(forward_hook)
    else:

        def pre_hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            new = fn(_hidden_arg(args, kwargs))
            if new is None:
                return None
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": new}

        handle = site.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


class LanguageModel:
    """A transformers model (its base, without any LM head), its tokenizer and its hooks."""

    def __init__(self, model: nn.Module, tokenizer: Any, name: str) -> None:
        self.model = model.eval()
        self.base: nn.Module = getattr(model, "base_model", model)
        self.config: Any = cast(Any, model).config  # a transformers PretrainedConfig
        self.tokenizer = tokenizer
        self.name = name
        self.hooks = HookMap(model, self.base, self.config.model_type)
        parameter = next(model.parameters())
        self.device = parameter.device
        self.dtype = parameter.dtype
        accepted = inspect.signature(self.base.forward).parameters
        self._forward_kwargs = {"use_cache": False} if "use_cache" in accepted else {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls,
        name_or_path: str | Path | None = None,
        *,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "float32",
    ) -> LanguageModel:
        """Load by hub id or local directory; `None` is the embedded all-MiniLM-L6-v2."""
        from pivotal_sae.runs import resolve_device

        torch_dtype = parse_dtype(dtype)
        target = device if isinstance(device, torch.device) else resolve_device(device)
        if name_or_path is None:
            from pivotal_sae.lm.defaults import default_model_path

            name_or_path, name = default_model_path(), "all-MiniLM-L6-v2"
        else:
            name = str(name_or_path)
        model, tokenizer = _load_transformers(str(name_or_path), torch_dtype)
        return cls(model.to(target), tokenizer, name)

    # ------------------------------------------------------------------ hooks
    @property
    def n_layers(self) -> int:
        return self.hooks.n_layers

    @property
    def d_model(self) -> int:
        return int(self.config.hidden_size)

    @property
    def max_positions(self) -> int | None:
        """Longest context the model's position embeddings allow (None: no fixed limit)."""
        for key in ("max_position_embeddings", "n_positions", "n_ctx"):
            value = getattr(self.config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def check_context_length(self, tokens: int, flag: str = "--max-tokens-in-prompt") -> None:
        """A context longer than the model's positions would index past its embeddings."""
        limit = self.max_positions
        if limit is not None and tokens > limit:
            raise UserError(f"{flag} {tokens} is more than {self.name} takes ({limit} positions)")

    def hook_names(self) -> list[str]:
        return self.hooks.names()

    def resolve(self, hook: str) -> HookSite:
        """The site of a hook name, or a `UserError` listing the valid names."""
        return self.hooks.resolve(hook)

    def check_sae(self, sae: ReadsHook, role: str = "SAE") -> HookSite:
        """The site the SAE reads, after checking its hook exists here and its width matches."""
        hook = sae.hook_name
        try:
            site = self.resolve(hook)
        except UserError:
            if not sae.hf_hook_name:
                raise UserError(
                    f"the {role} reads hook {hook!r}, which this {self.hooks.family.name} model "
                    f"({self.name}) does not have; "
                    + self.hooks.unknown_message(hook).split("; ", 1)[1]
                ) from None
            site = self.resolve(sae.hf_hook_name)
        width = self.d_model
        if sae.d_in != width:
            raise UserError(
                f"the {role} ({sae.label}) has d_in {sae.d_in} but hook {hook} of {self.name} "
                f"has width {width}; use an SAE trained on this model"
            )
        return site

    # ------------------------------------------------------------------ forward
    def forward(self, input_ids_BS: torch.Tensor, attention_mask_BS: torch.Tensor) -> None:
        self.base(
            input_ids=input_ids_BS.to(self.device),
            attention_mask=attention_mask_BS.to(self.device),
            **self._forward_kwargs,
        )

    @torch.no_grad()
    def activations(
        self,
        input_ids_BS: torch.Tensor,
        attention_mask_BS: torch.Tensor,
        hooks: Sequence[str],
        *,
        early_exit: bool = True,
    ) -> dict[str, torch.Tensor]:
        """`{hook: acts_BSM}`, running only as many blocks as the deepest hook needs."""
        sites = {hook: self.resolve(hook) for hook in dict.fromkeys(hooks)}
        acts: dict[str, torch.Tensor] = {}

        def capture(hook: str) -> Callable[[torch.Tensor], None]:
            def fn(tensor: torch.Tensor) -> None:
                acts[hook] = tensor
                if early_exit and len(acts) == len(sites):
                    raise _EarlyExit

            return fn

        with contextlib.ExitStack() as stack:
            for hook, site in sites.items():
                stack.enter_context(hooked(site, capture(hook)))
            with contextlib.suppress(_EarlyExit):
                self.forward(input_ids_BS, attention_mask_BS)
        return {hook: acts[hook] for hook in sites}

    # ------------------------------------------------------------------ patching
    def patch_baseline(
        self,
        input_ids_BS: torch.Tensor,
        attention_mask_BS: torch.Tensor,
        ablator_hook: str,
        reader_hook: str,
    ) -> PatchBaseline:
        """One forward up to the reader hook that also keeps what patched runs start from."""
        from pivotal_sae.lm.patching import patch_baseline

        return patch_baseline(self, input_ids_BS, attention_mask_BS, ablator_hook, reader_hook)

    def run_patched(
        self,
        baseline: PatchBaseline,
        context_index_V: torch.Tensor,
        delta_VSM: torch.Tensor,
    ) -> torch.Tensor:
        """Reader activations `acts_VSM` with `delta_VSM` added at the ablator hook, one batch."""
        from pivotal_sae.lm.patching import run_patched

        return run_patched(self, baseline, context_index_V, delta_VSM)


def _looks_like_path(name: str) -> bool:
    """Hub ids are `name` or `org/name`; anything else that does not exist is a missing path."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")


def _load_transformers(name_or_path: str, dtype: torch.dtype) -> tuple[nn.Module, Any]:
    """Model (base, eager attention where the family needs it) and tokenizer, or a `UserError`."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = Path(name_or_path).expanduser()
    if _looks_like_path(name_or_path) and not path.exists():
        raise UserError(f"--model {name_or_path}: no such directory")
    if path.exists() and not (path.is_dir() and (path / "config.json").is_file()):
        raise UserError(
            f"--model {name_or_path} is not a Hugging Face model directory (no config.json)"
        )
    source = str(path) if path.exists() else name_or_path
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() not in ("0", "", "false", "no")
    try:
        # Keep stderr to one line per error: no weight-loading bar unless a download may run.
        with _progress_bars(enabled=not (path.exists() or offline)):
            config = AutoConfig.from_pretrained(source)
            extra: dict[str, Any] = {}
            if config.model_type in ("gemma2", "gemma3_text"):
                extra["attn_implementation"] = "eager"  # SDPA would drop Gemma's soft-capping
            model = AutoModel.from_pretrained(source, dtype=dtype, **extra)
            tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if not path.exists():
            hint = (
                "the hub is switched off (HF_HUB_OFFLINE) and it is not in the local cache"
                if offline
                else "it is not in the local cache and the hub could not be reached"
            )
            raise UserError(
                f"cannot load model {name_or_path!r}: {hint}; run once online or pass "
                f"--model DIR with a local copy ({first})"
            ) from None
        raise UserError(f"cannot load model from {name_or_path}: {first}") from None
    return model, tokenizer


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if not enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not enabled:
            hf_logging.enable_progress_bar()
