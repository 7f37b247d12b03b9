"""The JSON API's request and response bodies (they are also its OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class HighlightRequest(BaseModel):
    prompt: str = Field(min_length=1, description="Text to run through the model.")
    feature_idx: int = Field(ge=0, description="Latent index, 0 ≤ feature_idx < d_sae.")
    sae: str | None = Field(
        default=None, description="Name of a loaded SAE (GET /api/saes); default: the first."
    )


class TopLatentsRequest(BaseModel):
    prompt: str = Field(min_length=1, description="Text to run through the model.")
    sae: str | None = Field(default=None, description="Name of a loaded SAE; default: the first.")
    k: int = Field(default=5, ge=1, le=32, description="Latents to report per token.")


class Token(BaseModel):
    position: int = Field(description="Position in the model's input (BOS is 0 when present).")
    token_id: int
    token: str = Field(description="The tokenizer's own spelling, e.g. '##ing' or '[CLS]'.")
    text: str = Field(description="The prompt's characters this token covers ('' if special).")
    start: int = Field(
        description="Character offset of `text` in the prompt (-1: the tokenizer gives no "
        "offsets; `text` then includes the token's leading space)."
    )
    end: int
    special: bool = Field(description="Added by the tokenizer (BOS/CLS), not part of the prompt.")


class TokenActivation(Token):
    activation: float = Field(description="The latent's activation at this token.")


class LatentValue(BaseModel):
    latent: int
    activation: float


class TokenTopLatents(Token):
    top: list[LatentValue] = Field(description="Most active latents here, largest first (> 0).")


class HighlightResponse(BaseModel):
    model: str
    sae: str
    hook_name: str
    d_sae: int
    feature_idx: int
    prompt: str
    tokens: list[TokenActivation]
    max_activation: float = Field(description="Largest activation over the prompt's own tokens.")
    explanation: str | None = None
    neuronpedia_url: str | None = None


class TopLatentsResponse(BaseModel):
    model: str
    sae: str
    hook_name: str
    d_sae: int
    k: int
    prompt: str
    tokens: list[TokenTopLatents]
    max_activation: float = Field(description="Largest top activation over the prompt's tokens.")


class SaeDescription(BaseModel):
    name: str = Field(description="What requests call this SAE.")
    label: str
    hook_name: str
    d_sae: int
    architecture: str
    neuronpedia_id: str | None = None
    role: str | None = Field(
        default=None, description="'ablator' or 'reader' for the SAEs of the --run directory."
    )
    explanations: int = Field(description="Latents with an explanation.")


class ExplorerInfo(BaseModel):
    model: str
    saes: list[SaeDescription]
    run: dict | None = Field(default=None, description="The --run directory, when one is open.")
    max_prompt_chars: int
    max_prompt_tokens: int


class Example(BaseModel):
    context_id: int
    max_activation: float
    tokens: list[str] = Field(description="Token spellings of the window around the maximum.")
    activations: list[float]
    center: int = Field(description="Index of the maximum within the window.")
    text: str = Field(description="The window as text, for highlighting it again.")


class PairRef(BaseModel):
    rank: int = Field(description="1-based rank of the pair in the --run's pairs.")
    partner: int
    cosine_similarity: float
    cooccurrence_count: int | None = None
    expected_cooccurrence: float | None = None


class Latent(BaseModel):
    sae: str
    index: int
    explanation: str | None = None
    neuronpedia_url: str | None = None
    firing_count: int | None = None
    tokens_counted: int | None = None
    firing_frequency: float | None = Field(default=None, description="firing_count / tokens.")
    examples: list[Example] = Field(default_factory=list)
    pairs: list[PairRef] = Field(
        default_factory=list, description="The --run's effect pairs it belongs to, best first."
    )


class PairSide(BaseModel):
    id: int
    explanation: str | None = None
    url: str | None = None
    firing_count: int | None = None
    ablation_count: int | None = None


class Pair(BaseModel):
    rank: int
    a: PairSide
    b: PairSide
    cosine_similarity: float
    cooccurrence_count: int | None = None
    expected_cooccurrence: float | None = None
    p_at_most_observed: float | None = None


class PairsPage(BaseModel):
    sae: str = Field(description="The loaded SAE the run's latent ids belong to.")
    kind: str = Field(description="'effect' or 'decoder' pairs.")
    total: int
    offset: int
    pairs: list[Pair]


class HistogramOut(BaseModel):
    edges: list[float] = Field(description="Bin edges, 0 to the largest activation seen.")
    counts: list[int] = Field(description="Non-zero activations per bin.")
    silent: int = Field(description="Counted tokens of the sample where the latent is 0.")


class TopToken(BaseModel):
    token_id: int
    token: str = Field(description="The tokenizer's spelling ('##ing' continues a word).")
    count: int = Field(description="Tokens of the sample with this id the latent fires on.")
    mean_activation: float


class QuantileBandOut(BaseModel):
    low: float
    high: float
    share: float = Field(description="Share of the latent's firings in this band.")
    examples: list[Example]


class MovedLatent(BaseModel):
    latent: int
    mean_effect: float = Field(
        description="Mean over ablations of reader activation at baseline minus after."
    )


class ReaderEffects(BaseModel):
    reader_sae: str | None = Field(default=None, description="The reader SAE, when loaded.")
    ablations: int
    lowered: list[MovedLatent]
    raised: list[MovedLatent]


class Association(BaseModel):
    latent: int
    cooccurrences: int
    jaccard: float
    lift: float
    pmi: float = Field(description="ln lift")
    lift_low: float = Field(description="95 % interval on lift (Poisson on the count).")
    lift_high: float


class LogitEffectOut(BaseModel):
    token_id: int
    token: str
    value: float


class LogitEffects(BaseModel):
    promoted: list[LogitEffectOut]
    suppressed: list[LogitEffectOut]


class Dashboard(BaseModel):
    """A latent's dashboard; a panel that cannot be shown is null with a note saying why."""

    sae: str
    index: int
    sample_contexts: int | None = Field(
        default=None, description="Contexts of the activation sample (corpus start)."
    )
    sample_tokens: int | None = None
    sample_corpus: str | None = Field(
        default=None, description="The sample's corpus: the run's when readable here, else sotu."
    )
    histogram: HistogramOut | None = None
    top_tokens: list[TopToken] = Field(default_factory=list)
    quantiles: list[QuantileBandOut] = Field(default_factory=list)
    reader_effects: ReaderEffects | None = None
    correlated: list[Association] | None = None
    logit_effects: LogitEffects | None = None
    notes: dict[str, str] = Field(
        default_factory=dict, description="Panel name → why it is empty or missing."
    )


class AssociationsOut(BaseModel):
    sae: str
    index: int
    tokens_counted: int
    firing_count: int
    partners: list[Association] = Field(description="Latents that fire with it, by Jaccard.")


class Cluster(BaseModel):
    latents: list[int]
    firing_counts: list[int]


class ClustersOut(BaseModel):
    sae: str
    threshold: float = Field(description="Least Jaccard of an edge.")
    min_size: int
    clusters: list[Cluster] = Field(description="Connected components, largest first.")
