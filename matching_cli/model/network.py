"""The pair model: a config dataclass and the nn.Module, architecture only."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pydantic import ConfigDict
from torch import nn

from matching_cli.choices import PairFeatures
from matching_cli.settings import ModelSettings


class ModelConfig(ModelSettings):
    """The `[model]` settings plus what the data decides: the width of each embedding block."""

    model_config = ConfigDict(frozen=True)

    block_dims: tuple[int, ...]  # width of each embedding block, in item-matrix order
    # Pair features from the listings' fields read beside the embeddings, by name, in input order.
    feature_names: tuple[str, ...] = ()

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


def pair_features(a: torch.Tensor, b: torch.Tensor, config: ModelConfig) -> torch.Tensor:
    """`symmetric`: per block |a-b|, a*b, a+b and the cosine, so score(a, b) == score(b, a).
    `concat`: the original project's [a, b]."""
    if config.pair_features == PairFeatures.concat:
        return torch.cat([a, b], dim=1)
    parts = []
    for a_block, b_block in zip(
        a.split(config.block_dims, dim=1), b.split(config.block_dims, dim=1), strict=True
    ):
        cosine = nn.functional.cosine_similarity(a_block, b_block, dim=1, eps=1e-8).unsqueeze(1)
        parts += [(a_block - b_block).abs(), a_block * b_block, a_block + b_block, cosine]
    return torch.cat(parts, dim=1)


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
        x = pair_features(a, b, self.config)
        if self.config.feature_names:
            if features is None:
                raise ValueError("this model reads pair features: pass them")
            scaled = (features - self.feature_mean) / self.feature_scale
            x = torch.cat([x, scaled.clamp(-self.FEATURE_CLIP, self.FEATURE_CLIP).to(x.dtype)], 1)
        return self.mlp(x).squeeze(1)
