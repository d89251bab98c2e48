"""The original project's data path, re-implemented to benchmark against (not used by `matching`).

Written from the original README and the description in the benchmark issue, and kept as the
original did it: pandas reads whole parquet files (every column, descriptions and extra pictures
included); each vector is L2-normalised in a per-row `.apply` (the main picture column holds a list
with one inner vector, of which the original took `x[0]`); listings are looked up in
`{variantid: vector}` dicts; a per-row `Dataset.__getitem__` over the pairs DataFrame feeds a default
`DataLoader` (batch 256, one process); an 80/20 random split; predictions are written with pandas.

Departures, each to keep the comparison about the data path only:
- the model is `matching_cli.model.PairClassifier` with `pair_features="concat"` (the original's
  [a, b] MLP), fed by splitting the concatenated [text1, image1, text2, image2] tensor;
- the optimiser is the project's AdamW (`make_optimizer`), the loss BCE-with-logits;
- a null embedding becomes a zero vector, where the original would stop with a TypeError.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, Dataset

from matching_cli.model.network import ModelConfig, PairClassifier

TEXT_COLUMN, IMAGE_COLUMN = "name_bert_64", "main_pic_embeddings_resnet_v1"
TEXT_DIM, IMAGE_DIM = 64, 128
BATCH_SIZE = 256
ITEM_DIM = TEXT_DIM + IMAGE_DIM


@dataclass
class OriginalData:
    text: dict  # variantid -> normalised float64 vector
    image: dict
    train: pd.DataFrame
    val: pd.DataFrame


def _unit(vector, dim: int) -> np.ndarray:
    if vector is None:
        return np.zeros(dim)
    return vector / np.linalg.norm(vector)


def load_embeddings(data_dir: Path) -> tuple[dict, dict]:
    text = pd.read_parquet(data_dir / "text_and_bert.parquet")
    text[TEXT_COLUMN] = text[TEXT_COLUMN].apply(lambda v: _unit(v, TEXT_DIM))
    text_emb = dict(zip(text["variantid"], text[TEXT_COLUMN], strict=True))
    del text
    images = pd.read_parquet(data_dir / "images_embed.parquet")
    images[IMAGE_COLUMN] = images[IMAGE_COLUMN].apply(
        lambda v: _unit(v[0] if v is not None else None, IMAGE_DIM)
    )
    image_emb = dict(zip(images["variantid"], images[IMAGE_COLUMN], strict=True))
    return text_emb, image_emb


def load(data_dir: Path, test_size: float = 0.2, seed: int = 42) -> OriginalData:
    text_emb, image_emb = load_embeddings(data_dir)
    pairs = pd.read_parquet(data_dir / "train.parquet")
    train, val = train_test_split(pairs, test_size=test_size, random_state=seed)
    return OriginalData(text_emb, image_emb, train, val)


class PairDataset(Dataset):
    """One pair per `__getitem__`: a pandas row, four dict look-ups, four small tensors."""

    def __init__(self, pairs: pd.DataFrame, text: dict, image: dict):
        self.pairs = pairs.reset_index(drop=True)
        self.text, self.image = text, image
        self.labelled = "target" in self.pairs.columns

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, idx: int):
        row = self.pairs.iloc[idx]
        id1, id2 = row["variantid1"], row["variantid2"]
        features = torch.cat(
            [
                torch.tensor(self.text[id1], dtype=torch.float32),
                torch.tensor(self.image[id1], dtype=torch.float32),
                torch.tensor(self.text[id2], dtype=torch.float32),
                torch.tensor(self.image[id2], dtype=torch.float32),
            ]
        )
        if self.labelled:
            return features, torch.tensor(row["target"], dtype=torch.float32)
        return features


def make_model(device: torch.device) -> PairClassifier:
    config = ModelConfig(
        block_dims=(TEXT_DIM, IMAGE_DIM), hidden_size=256, num_layers=3, pair_features="concat"
    )
    return PairClassifier(config).to(device)


def _logits(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    return model(features[:, :ITEM_DIM], features[:, ITEM_DIM:])


def training_steps(
    model: nn.Module, optimizer: torch.optim.Optimizer, data: OriginalData, device: torch.device
) -> Iterator[int]:
    """The original training loop, one batch per `next()`, over shuffled epochs; yields the batch's pairs."""
    loss_fn = nn.BCEWithLogitsLoss()
    running = 0.0
    while True:
        loader = DataLoader(
            PairDataset(data.train, data.text, data.image), BATCH_SIZE, shuffle=True
        )
        for features, target in loader:
            model.train()
            features, target = features.to(device), target.to(device)
            optimizer.zero_grad()
            loss = loss_fn(_logits(model, features), target)
            loss.backward()
            optimizer.step()
            running += loss.item()
            yield len(target)


@torch.no_grad()
def score(model: nn.Module, dataset: PairDataset, device: torch.device) -> np.ndarray:
    """Match probabilities for every pair of the dataset, in order."""
    model.eval()
    out = []
    for batch in DataLoader(dataset, BATCH_SIZE):
        features = batch[0] if dataset.labelled else batch
        out.append(torch.sigmoid(_logits(model, features.to(device))).cpu().numpy())
    return np.concatenate(out)


def predict(
    model: nn.Module,
    text: dict,
    image: dict,
    pairs_path: Path,
    out_path: Path,
    device: torch.device,
) -> int:
    pairs = pd.read_parquet(pairs_path)
    pairs["target"] = score(model, PairDataset(pairs, text, image), device)
    pairs[["variantid1", "variantid2", "target"]].to_csv(out_path, index=False)
    return len(pairs)
