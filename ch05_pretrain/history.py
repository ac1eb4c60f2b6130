"""What `train` records: one `History` entry per evaluation, in plain numbers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class History:
    """What happened during training, one entry per evaluation (all lists have equal length).

    `train_loss` is the mean training loss of the optimizer steps since the previous evaluation
    (nan if none of their micro-batches had a counted target); `val_loss` is None without a
    validation loader; `metrics` maps "val_<name>" and "train_<name>" to lists of floats.
    `history["val_acc"]` reads a field or a metric. Plain numbers only, so
    `json.dump(history.to_dict(), f)` works and `plt.plot(h.tokens_seen, h.val_loss)` too.
    """

    step: list[int] = field(default_factory=list)
    tokens_seen: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float | None] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    elapsed: list[float] = field(default_factory=list)  # seconds since training started
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{k: dict(v) if k == "metrics" else list(v) for k, v in d.items()})

    def __getitem__(self, key: str) -> list:
        return self.metrics[key] if key in self.metrics else getattr(self, key)
