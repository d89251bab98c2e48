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

    @classmethod
    def build(cls, settings: ModelSettings, block_dims: Sequence[int]) -> ModelConfig:
        return cls(block_dims=tuple(block_dims), **dict(settings))

    @property
    def item_dim(self) -> int:
        return sum(self.block_dims)

    @property
    def input_size(self) -> int:
        if self.pair_features == PairFeatures.concat:
            return 2 * self.item_dim
        return sum(3 * d + 1 for d in self.block_dims)

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
    """Pair features, then Linear + LayerNorm + PReLU blocks, then one logit."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
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

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.mlp(pair_features(a, b, self.config)).squeeze(1)


class PairScorer(nn.Module):
    """One input tensor [a, b] of shape (batch, 2 * item_dim) -> match probability.

    This is the form MLFlow serves: a model with a single tensor input."""

    def __init__(self, classifier: PairClassifier):
        super().__init__()
        self.classifier = classifier

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        a, b = pairs.split(self.classifier.config.item_dim, dim=1)
        return torch.sigmoid(self.classifier(a, b))
