"""SAELens/TransformerLens hook names mapped onto Hugging Face modules, family by family.

A hook name such as `blocks.3.hook_mlp_out` names a tensor in TransformerLens's model. Here each
one becomes a `HookSite`: the input or output of one module of the Hugging Face model. Where
TransformerLens's definition differs from the obvious module we follow TransformerLens (Gemma-2's
`hook_mlp_out` is the output of `post_feedforward_layernorm`; BERT's `hook_resid_post` is the sum
that the block's second LayerNorm normalizes). docs/models.md lists every family's table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from torch import nn

from pivotal_sae.errors import UserError

Where = Literal["input", "output"]

#: Depth of each hook inside a block, in execution order (parallel blocks run attention first).
HOOK_ORDER = {
    "hook_resid_pre": 0,
    "hook_attn_out": 1,
    "hook_resid_mid": 2,
    "hook_mlp_out": 3,
    "hook_resid_post": 4,
    "hook_normalized_resid_post": 5,
}

_BLOCK_INPUT: tuple[str, Where] = ("", "input")
_BLOCK_OUTPUT: tuple[str, Where] = ("", "output")


@dataclass(frozen=True)
class Family:
    """Where one architecture family keeps its blocks and each hook's tensor, per block."""

    name: str
    layers: str
    """Attribute path from the base model to its `nn.ModuleList` of blocks."""
    sites: dict[str, tuple[str, Where]]
    """Hook suffix → (module path inside the block, "" for the block itself; input or output)."""


def _pre_norm(attn: str, mlp: str, mid: str) -> dict[str, tuple[str, Where]]:
    return {
        "hook_resid_pre": _BLOCK_INPUT,
        "hook_attn_out": (attn, "output"),
        "hook_resid_mid": (mid, "input"),
        "hook_mlp_out": (mlp, "output"),
        "hook_resid_post": _BLOCK_OUTPUT,
    }


_LLAMA_LIKE = _pre_norm("self_attn", "mlp", "post_attention_layernorm")
_GEMMA2_LIKE = _pre_norm(
    "post_attention_layernorm", "post_feedforward_layernorm", "pre_feedforward_layernorm"
)

FAMILIES: dict[str, Family] = {
    "gemma2": Family("gemma2", "layers", _GEMMA2_LIKE),
    "gemma3_text": Family("gemma3_text", "layers", _GEMMA2_LIKE),
    "gemma": Family("gemma", "layers", _LLAMA_LIKE),
    "llama": Family("llama", "layers", _LLAMA_LIKE),
    "mistral": Family("mistral", "layers", _LLAMA_LIKE),
    "qwen2": Family("qwen2", "layers", _LLAMA_LIKE),
    "qwen3": Family("qwen3", "layers", _LLAMA_LIKE),
    "gpt2": Family("gpt2", "h", _pre_norm("attn", "mlp", "ln_2")),
    "gpt_neox": Family(
        "gpt_neox", "layers", _pre_norm("attention", "mlp", "post_attention_layernorm")
    ),
    "bert": Family(
        "bert",
        "encoder.layer",
        {
            "hook_resid_pre": _BLOCK_INPUT,
            "hook_attn_out": ("attention.output.dense", "output"),
            "hook_resid_mid": ("attention.output.LayerNorm", "input"),
            "hook_mlp_out": ("output.dense", "output"),
            "hook_resid_post": ("output.LayerNorm", "input"),
            "hook_normalized_resid_post": _BLOCK_OUTPUT,
        },
    ),
}
#: Families whose block output is the residual sum with the MLP output as its last term.
PRE_NORM_FAMILIES = frozenset(FAMILIES) - {"bert"}
#: Families whose blocks hold only what their residual stream needs (we know no more of them).
GENERIC = Family("generic", "", {"hook_resid_pre": _BLOCK_INPUT, "hook_resid_post": _BLOCK_OUTPUT})


@dataclass(frozen=True)
class HookSite:
    """One hook: the input or output of `module`, at depth (`layer`, `order`)."""

    name: str
    layer: int
    order: int
    module: nn.Module
    where: Where
    boundary: Literal["block_input", "block_output"] | None
    """Whether the tensor is a block's input or output (patching then needs no module hook)."""
    adds_to_block_output: bool = False
    """The block's output is `something + this tensor`, and nothing else in the block reads it
    (a pre-norm block's MLP output): a delta here equals the same delta on the block's output,
    so patching can start at the next block."""

    @property
    def depth(self) -> tuple[int, int]:
        return (self.layer, self.order)


def _get(module: nn.Module, path: str) -> nn.Module:
    for part in path.split(".") if path else []:
        module = getattr(module, part) if not part.isdigit() else module[int(part)]  # type: ignore[index]
    return module


def find_layers(base: nn.Module, family: Family) -> nn.ModuleList:
    """The base model's list of blocks; for unknown families, its longest `ModuleList`."""
    if family.layers:
        layers = _get(base, family.layers)
        assert isinstance(layers, nn.ModuleList)
        return layers
    lists = [m for m in base.modules() if isinstance(m, nn.ModuleList)]
    if not lists:
        raise UserError(f"cannot find the transformer blocks of {type(base).__name__}")
    return max(lists, key=len)


def family_of(base: nn.Module, model_type: str) -> Family:
    family = FAMILIES.get(model_type, GENERIC)
    if family.name == "gpt_neox" and getattr(base.config, "use_parallel_residual", True):
        # A parallel block adds attention and MLP to the same input: there is no resid_mid.
        sites = {k: v for k, v in family.sites.items() if k != "hook_resid_mid"}
        family = Family(family.name, family.layers, sites)
    return family


class HookMap:
    """Resolves hook names (TransformerLens or Hugging Face module paths) to `HookSite`s."""

    def __init__(self, model: nn.Module, base: nn.Module, model_type: str) -> None:
        self.family = family_of(base, model_type)
        self.model = model
        self.base = base
        self.layers = find_layers(base, self.family)
        self._module_names = {id(m): n for n, m in model.named_modules()}

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    def names(self) -> list[str]:
        return [
            f"blocks.{layer}.{suffix}"
            for layer in range(self.n_layers)
            for suffix in self.family.sites
        ]

    def resolve(self, name: str) -> HookSite:
        match = re.fullmatch(r"blocks\.(\d+)\.(hook_\w+)", name)
        if match and match.group(2) in self.family.sites and int(match.group(1)) < self.n_layers:
            layer, suffix = int(match.group(1)), match.group(2)
            path, where = self.family.sites[suffix]
            block = self.layers[layer]
            boundary: Literal["block_input", "block_output"] | None = None
            if path == "":
                boundary = "block_input" if where == "input" else "block_output"
            additive = suffix == "hook_mlp_out" and self.family.name in PRE_NORM_FAMILIES
            return HookSite(name, layer, HOOK_ORDER[suffix], _get(block, path), where, boundary,
                            additive)  # fmt: skip
        site = self._resolve_module_path(name)
        if site is not None:
            return site
        raise UserError(self.unknown_message(name))

    def module_name(self, site: HookSite) -> str:
        """The Hugging Face module path of a site (e.g. `layers.3.post_feedforward_layernorm`)."""
        return self._module_names.get(id(site.module)) or type(site.module).__name__

    def unknown_message(self, name: str) -> str:
        n = self.n_layers
        suffixes = ", ".join(self.family.sites)
        return (
            f"unknown hook {name!r} for this {self.family.name} model; valid hooks are "
            f"blocks.{{0..{n - 1}}}.{{{suffixes}}} (e.g. blocks.{min(3, n - 1)}.hook_resid_post)"
        )

    def _resolve_module_path(self, name: str) -> HookSite | None:
        """A Hugging Face module path (SAELens's `hf_hook_name`) names that module's output."""
        path = name.removesuffix(".output")
        for root in (self.model, self.base):
            try:
                module = _get(root, path)
            except (AttributeError, IndexError, TypeError):
                continue
            for layer, block in enumerate(self.layers):
                if module is block:
                    return self._canonical(layer, "output", name)
                for order, inner in enumerate(block.modules()):
                    if inner is module:
                        for suffix, (p, where) in self.family.sites.items():
                            if p and _get(block, p) is module and where == "output":
                                return self.resolve(f"blocks.{layer}.{suffix}")
                        return HookSite(name, layer, 100 + order, module, "output", None)
        return None

    def _canonical(self, layer: int, where: Where, name: str) -> HookSite:
        for suffix, (path, w) in self.family.sites.items():
            if path == "" and w == where:
                return self.resolve(f"blocks.{layer}.{suffix}")
        raise UserError(self.unknown_message(name))  # pragma: no cover
