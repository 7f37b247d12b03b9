"""The explorer's model side: one language model, the SAEs loaded at start, and one lock.

Model calls go through `Explorer._lock`: `LanguageModel.activations` registers hooks on the
model's modules, so two requests running at once would see each other's hooks. With the lock
every request runs alone, at batch size 1, so the same input always gives the same numbers,
whatever else is in flight.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pivotal_sae.absorption.explanations import Explanations, neuronpedia_url
from pivotal_sae.errors import UserError
from pivotal_sae.explorer.schemas import (
    HighlightResponse,
    LatentValue,
    SaeDescription,
    Token,
    TokenActivation,
    TokenTopLatents,
    TopLatentsResponse,
)
from pivotal_sae.lm.contexts import start_token_id
from pivotal_sae.saes.sae import Sae

#: Decoder-only families whose `AutoModel` base we may read an unembedding beside.
CAUSAL_FAMILIES = frozenset(
    {"gpt2", "llama", "gemma", "gemma2", "gemma3_text", "gpt_neox", "mistral", "qwen2", "qwen3",
     "phi", "phi3", "opt", "gptj", "falcon"}
)  # fmt: skip


@dataclass
class LoadedSae:
    """An SAE as the explorer serves it: its public name, the hook it reads, its texts."""

    name: str
    sae: Sae
    hook: str
    """A hook name that resolves on the model (the SAE's own, or its hf_hook_name)."""
    role: str | None = None
    """'ablator' / 'reader' for the SAEs of the --run directory."""
    explanations: Explanations = field(default_factory=Explanations)

    @property
    def d_sae(self) -> int:
        return self.sae.d_sae

    def explanation(self, index: int) -> str | None:
        return self.explanations.get(index)

    def url(self, index: int) -> str | None:
        np_id = self.sae.info.neuronpedia_id
        try:
            return neuronpedia_url(np_id, index) if np_id else None
        except UserError:  # an id that is not a plain model/sae pair makes no link
            return None

    def describe(self) -> SaeDescription:
        return SaeDescription(
            name=self.name,
            label=self.sae.label,
            hook_name=self.sae.hook_name,
            d_sae=self.d_sae,
            architecture=self.sae.architecture,
            neuronpedia_id=self.sae.info.neuronpedia_id,
            role=self.role,
            explanations=len(self.explanations),
        )


class Explorer:
    """Tokenize prompts and read SAE latents on them, one request at a time."""

    def __init__(
        self,
        lm: Any,
        saes: Sequence[LoadedSae],
        *,
        max_prompt_chars: int = 4000,
        max_prompt_tokens: int = 512,
    ) -> None:
        if not saes:
            raise UserError("the explorer needs at least one SAE")
        self.lm = lm
        self.saes = {loaded.name: loaded for loaded in saes}
        self.max_prompt_chars = max_prompt_chars
        positions = getattr(lm.config, "max_position_embeddings", None) or max_prompt_tokens
        self.max_prompt_tokens = min(max_prompt_tokens, int(positions))
        self._lock = threading.Lock()
        self._bos = start_token_id(lm.tokenizer)

    @property
    def model_name(self) -> str:
        return str(self.lm.name)

    def sae(self, name: str | None) -> LoadedSae:
        """The SAE called `name` (None: the first loaded), or a UserError listing the names."""
        if name is None:
            return next(iter(self.saes.values()))
        if name not in self.saes:
            names = ", ".join(repr(n) for n in self.saes)
            raise UserError(f"unknown SAE {name!r}; this server has {names}")
        return self.saes[name]

    def check_feature(self, loaded: LoadedSae, feature_idx: int) -> None:
        if not 0 <= feature_idx < loaded.d_sae:
            raise UserError(
                f"feature_idx {feature_idx} is out of range for SAE {loaded.name!r}, "
                f"which has latents 0..{loaded.d_sae - 1}"
            )

    # ------------------------------------------------------------------ tokens
    def tokenize(self, prompt: str) -> list[Token]:
        """The model's input for `prompt`: BOS (if the tokenizer has one), then its tokens,
        each with the span of the prompt it covers. Too long a prompt is a UserError."""
        if len(prompt) > self.max_prompt_chars:
            raise UserError(
                f"the prompt has {len(prompt):,} characters; this server takes at most "
                f"{self.max_prompt_chars:,}"
            )
        tokenizer = self.lm.tokenizer
        try:
            encoded = tokenizer(
                prompt, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            offsets = [tuple(o) for o in encoded["offset_mapping"]]
        except NotImplementedError:  # slow (Python) tokenizers have no offsets
            encoded = tokenizer(prompt, add_special_tokens=False, verbose=False)
            offsets = None
        ids = list(encoded["input_ids"])
        total = len(ids) + (self._bos is not None)
        if total > self.max_prompt_tokens:
            raise UserError(
                f"the prompt is {total:,} tokens long; this server takes at most "
                f"{self.max_prompt_tokens:,} (BOS included)"
            )
        if not ids:
            raise UserError("the prompt has no tokens")
        pieces = tokenizer.convert_ids_to_tokens(ids)
        texts = [prompt[s:e] for s, e in offsets] if offsets else token_texts(tokenizer, ids)
        tokens = []
        if self._bos is not None:
            bos = tokenizer.convert_ids_to_tokens([self._bos])[0]
            tokens.append(Token(position=0, token_id=self._bos, token=bos, text="", start=0,
                                end=0, special=True))  # fmt: skip
        for k, (token_id, piece, text) in enumerate(zip(ids, pieces, texts, strict=True)):
            start, end = offsets[k] if offsets else (-1, -1)
            tokens.append(
                Token(position=len(tokens), token_id=int(token_id), token=str(piece), text=text,
                      start=int(start), end=int(end), special=False)
            )  # fmt: skip
        return tokens

    @torch.inference_mode()
    def latent_acts(self, loaded: LoadedSae, tokens: Sequence[Token]) -> torch.Tensor:
        """`acts_SE` of the SAE at every token (float32, CPU)."""
        ids_1S = torch.tensor([[t.token_id for t in tokens]], dtype=torch.long)
        mask_1S = torch.ones_like(ids_1S)
        with self._lock:
            hidden_1SM = self.lm.activations(ids_1S, mask_1S, [loaded.hook])[loaded.hook]
            acts_SE = loaded.sae.encode(hidden_1SM.to(loaded.sae.dtype))[0]
            return acts_SE.float().cpu()

    def activation_sample(
        self, loaded: LoadedSae, n_contexts: int, tokens: int, corpus: Any = None
    ) -> Any:
        """Every latent's activations over the first `n_contexts` contexts of `tokens` tokens of
        `corpus` (an `lm.corpus.Corpus`; default the embedded one), as an
        `absorption.dashboard.ActivationSample`, under the lock."""
        from pivotal_sae.absorption.dashboard import collect_sample
        from pivotal_sae.lm.contexts import Contexts
        from pivotal_sae.lm.corpus import open_corpus

        length = min(tokens, self.max_prompt_tokens)
        source = corpus if corpus is not None else open_corpus()
        contexts = Contexts(source, self.lm.tokenizer, length, n_contexts)
        with self._lock, torch.inference_mode():
            return collect_sample(self.lm, loaded.sae, contexts)

    def unembedding(self) -> tuple[torch.Tensor | None, str]:
        """(W_U as (vocab, d_model), "") for a causal LM whose output embedding is its input
        embedding; else (None, why not)."""
        config = self.lm.config
        names = list(getattr(config, "architectures", None) or [])
        causal = config.model_type in CAUSAL_FAMILIES or any(
            n.endswith(("ForCausalLM", "LMHeadModel")) for n in names
        )
        if not causal or getattr(config, "is_encoder_decoder", False):
            return None, f"{self.model_name} is not a causal LM: it has no unembedding to read"
        if not getattr(config, "tie_word_embeddings", False):
            return None, "the model's unembedding is not tied to its embedding and is not loaded"
        embedding = self.lm.base.get_input_embeddings()
        return embedding.weight.detach().float().cpu(), ""

    # ------------------------------------------------------------------ requests
    def highlight(self, prompt: str, feature_idx: int, sae: str | None = None) -> HighlightResponse:
        loaded = self.sae(sae)
        self.check_feature(loaded, feature_idx)
        tokens = self.tokenize(prompt)
        values = self.latent_acts(loaded, tokens)[:, feature_idx].tolist()
        own = [v for t, v in zip(tokens, values, strict=True) if not t.special]
        return HighlightResponse(
            model=self.model_name,
            sae=loaded.name,
            hook_name=loaded.sae.hook_name,
            d_sae=loaded.d_sae,
            feature_idx=feature_idx,
            prompt=prompt,
            tokens=[
                TokenActivation(**t.model_dump(), activation=v)
                for t, v in zip(tokens, values, strict=True)
            ],
            max_activation=max(own, default=0.0),
            explanation=loaded.explanation(feature_idx),
            neuronpedia_url=loaded.url(feature_idx),
        )

    def top_latents(self, prompt: str, k: int = 5, sae: str | None = None) -> TopLatentsResponse:
        loaded = self.sae(sae)
        tokens = self.tokenize(prompt)
        acts_SE = self.latent_acts(loaded, tokens)
        values_SK, latents_SK = acts_SE.topk(min(k, loaded.d_sae), dim=1)
        rows = []
        for token, values, latents in zip(
            tokens, values_SK.tolist(), latents_SK.tolist(), strict=True
        ):
            top = [
                LatentValue(latent=i, activation=v)
                for v, i in zip(values, latents, strict=True)
                if v > 0
            ]
            rows.append(TokenTopLatents(**token.model_dump(), top=top))
        own = [r.top[0].activation for r in rows if r.top and not r.special]
        return TopLatentsResponse(
            model=self.model_name,
            sae=loaded.name,
            hook_name=loaded.sae.hook_name,
            d_sae=loaded.d_sae,
            k=k,
            prompt=prompt,
            tokens=rows,
            max_activation=max(own, default=0.0),
        )


def token_texts(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's text as it reads in context ('##ing' → 'ing', 'Ġthe' → ' the'): the
    growth of the decoded prefix, so spaces and word pieces come out as the tokenizer means."""
    texts, previous = [], ""
    for end in range(1, len(ids) + 1):
        decoded = tokenizer.decode(
            list(ids[:end]), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
        if decoded.startswith(previous):
            texts.append(decoded[len(previous) :])
        else:  # a multi-byte character completed, or the decoder rewrote the prefix
            texts.append(tokenizer.decode([ids[end - 1]], clean_up_tokenization_spaces=False))
        previous = decoded
    if texts and str(tokenizer.convert_ids_to_tokens([int(ids[0])])[0]).startswith("##"):
        # A window that starts inside a word: its first WordPiece piece without the marker.
        texts[0] = texts[0].removeprefix("##")
    return texts
