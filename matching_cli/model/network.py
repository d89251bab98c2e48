"""The pair model: a config dataclass and the nn.Module, architecture only."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import ConfigDict, field_validator
from torch import nn

from matching_cli.choices import Head, PairFeatures
from matching_cli.settings import ModelSettings


class ModelConfig(ModelSettings):
    """The `[model]` settings plus what the data decides: the width of each embedding block."""

    model_config = ConfigDict(frozen=True)

    head: Head = Head.mlp  # a built model's head is concrete: `auto` is chosen before (`jobs.py`)
    block_dims: tuple[int, ...]  # width of each embedding block, in item-matrix order
    # Pair features from the listings' fields read beside the embeddings, by name, in input order.
    feature_names: tuple[str, ...] = ()

    @field_validator("head")
    @classmethod
    def _concrete(cls, head: Head) -> Head:
        if head == Head.auto:
            raise ValueError("head auto is chosen when training starts; a model is mlp or trees")
        return head

    @classmethod
    def build(
        cls, settings: ModelSettings, block_dims: Sequence[int], feature_names: Sequence[str] = ()
    ) -> ModelConfig:
        return cls(
            block_dims=tuple(block_dims), feature_names=tuple(feature_names), **dict(settings)
        )

    @property
    def item_dim(self) -> int:
        return sum(self.block_dims)

    @property
    def input_size(self) -> int:
        if self.pair_features == PairFeatures.concat:
            return 2 * self.item_dim + len(self.feature_names)
        return sum(3 * d + 1 for d in self.block_dims) + len(self.feature_names)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """Raises pydantic's ValidationError (a ValueError) when `values` do not describe a model."""
        return cls.model_validate(values)


def pair_features(
    a: torch.Tensor, b: torch.Tensor, config: ModelConfig, extra: int = 0
) -> torch.Tensor:
    """`symmetric`: per block |a-b|, a*b, a+b and the cosine, so score(a, b) == score(b, a).
    `concat`: the original project's [a, b]. With `extra`, that many columns more at the end,
    left for the caller to fill.

    Each part is written into its columns of one buffer, not made apart and concatenated: on a
    CPU at the real size this took the forward pass's inputs from 1.9-2.1 s to 1.3-1.4 s a
    million pairs. The cosine is the block's dot product (its column of a*b summed) over the
    product of the norms; the item embeddings never need gradients, so `out=` is safe here."""
    out = a.new_empty(a.shape[0], config.input_size - len(config.feature_names) + extra)
    if config.pair_features == PairFeatures.concat:
        out[:, : a.shape[1]] = a
        out[:, a.shape[1] : 2 * a.shape[1]] = b
        return out
    start = 0
    for a_block, b_block in zip(
        a.split(config.block_dims, dim=1), b.split(config.block_dims, dim=1), strict=True
    ):
        width = a_block.shape[1]
        difference, product, total = (
            out[:, start + k * width : start + (k + 1) * width] for k in range(3)
        )
        torch.sub(a_block, b_block, out=difference).abs_()
        torch.mul(a_block, b_block, out=product)
        torch.add(a_block, b_block, out=total)
        norms = torch.linalg.vector_norm(a_block, dim=1) * torch.linalg.vector_norm(b_block, dim=1)
        torch.div(product.sum(dim=1), norms.clamp_min_(_COSINE_EPS), out=out[:, start + 3 * width])
        start += 3 * width + 1
    return out


_COSINE_EPS = 1e-8  # a zero vector (a missing embedding) has cosine 0 with anything


class PairClassifier(nn.Module):
    """Pair features (from the embeddings, and the listings' fields standardised), then
    Linear + LayerNorm + PReLU blocks, then one logit."""

    FEATURE_CLIP = 5.0  # standard deviations: counts have long tails that should not dominate

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        if config.feature_names:  # part of the weights: the model standardises its own input
            width = len(config.feature_names)
            self.register_buffer("feature_mean", torch.zeros(width))
            self.register_buffer("feature_scale", torch.ones(width))
        layers: list[nn.Module] = []
        width = config.input_size
        for _ in range(config.num_layers):
            layers += [
                nn.Linear(width, config.hidden_size),
                nn.LayerNorm(config.hidden_size),
                nn.PReLU(),
                nn.Dropout(config.dropout),
            ]
            width = config.hidden_size
        layers.append(nn.Linear(width, 1))
        self.mlp = nn.Sequential(*layers)

    def fit_scaler(self, features: torch.Tensor) -> None:
        """Standardise the field features by their mean and spread on the training pairs."""
        self.feature_mean.copy_(features.mean(dim=0))
        self.feature_scale.copy_(features.std(dim=0).clamp_min(1e-6))

    def forward(
        self, a: torch.Tensor, b: torch.Tensor, features: torch.Tensor | None = None
    ) -> torch.Tensor:
        width = len(self.config.feature_names)
        x = pair_features(a, b, self.config, extra=width)
        if width:
            if features is None:
                raise ValueError("this model reads pair features: pass them")
            scaled = x[:, x.shape[1] - width :]
            torch.sub(features.to(x.dtype), self.feature_mean, out=scaled)
            scaled.div_(self.feature_scale).clamp_(-self.FEATURE_CLIP, self.FEATURE_CLIP)
        return self.mlp(x).squeeze(1)
