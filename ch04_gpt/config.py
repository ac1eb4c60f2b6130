"""GPT model configuration: one small dataclass and the four GPT-2 presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from ch02_data.checks import number_in, positive_int


@dataclass(frozen=True)
class GPTConfig:
    vocab_size: int = 50257  # V: GPT-2's BPE vocabulary (50,000 merges + 256 bytes + <|endoftext|>)
    context_length: int = 1024  # longest sequence the model sees (number of position embeddings)
    emb_dim: int = 768  # C: width of every token vector
    n_heads: int = 12  # nh: attention heads per block; emb_dim must divide evenly
    n_layers: int = 12  # transformer blocks stacked
    drop_rate: float = 0.1  # dropout on embeddings, attention weights and residual branches
    qkv_bias: bool = True  # bias in the query/key/value projections (GPT-2 has it)
    tie_weights: bool = True  # output head shares the token-embedding matrix (GPT-2 does)
    # Architecture switches, to compare GPT-2 with choices made by later models.
    norm: str = "layernorm"  # "layernorm" (GPT-2) or "rmsnorm" (Llama, Gemma, ...)
    activation: str = "gelu"  # "gelu" (tanh form, GPT-2), "relu", "silu" or "swiglu"
    norm_position: str = "pre"  # "pre" (GPT-2: norm inside the residual branch) or "post" (2017)
    ff_hidden_dim: int | None = None  # feed-forward width; None = 4*C (2/3 of that for swiglu)

    def __post_init__(self):
        # Sizes first: n_heads=0 would otherwise surface as a ZeroDivisionError below.
        for name in ("vocab_size", "context_length", "emb_dim", "n_heads", "n_layers"):
            positive_int(name, getattr(self, name))
        positive_int("ff_hidden_dim", self.ff_hidden_dim, none_means="the default width")
        number_in("drop_rate", self.drop_rate, 0, 1, closed="[)", meaning="a probability")
        if self.emb_dim % self.n_heads:
            raise ValueError(f"emb_dim {self.emb_dim} is not divisible by n_heads {self.n_heads}")
        for name, allowed in [
            ("norm", ("layernorm", "rmsnorm")),
            ("activation", ("gelu", "relu", "silu", "swiglu")),
            ("norm_position", ("pre", "post")),
        ]:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {allowed}")

    def to_dict(self) -> dict:
        """Plain dict of the fields, for checkpoints (`torch.load(weights_only=True)` can read it)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "GPTConfig":
        """Inverse of `to_dict`; unknown keys raise, so a typo cannot pass silently."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TypeError(f"unknown GPTConfig fields: {sorted(unknown)}")
        return cls(**d)

    def replace(self, **changes) -> "GPTConfig":
        """A copy with some fields changed, e.g. `GPT_CONFIGS["gpt2"].replace(context_length=256)`."""
        return replace(self, **changes)


# The four released GPT-2 sizes (Radford et al. 2019, Table 2; Hugging Face's config.json files).
GPT_CONFIGS: dict[str, GPTConfig] = {
    "gpt2": GPTConfig(emb_dim=768, n_layers=12, n_heads=12),  # 124M
    "gpt2-medium": GPTConfig(emb_dim=1024, n_layers=24, n_heads=16),  # 355M
    "gpt2-large": GPTConfig(emb_dim=1280, n_layers=36, n_heads=20),  # 774M
    "gpt2-xl": GPTConfig(emb_dim=1600, n_layers=48, n_heads=25),  # 1558M
}
