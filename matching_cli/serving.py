"""The served model: two listings' raw fields in, a match probability out.

`mlflow models serve` (and `mlflow.pyfunc.spark_udf`) run `mlflow_model.py`, which wraps
`RawPairScorer`. A request holds, per pair, each listing's fields as they are in the parquet files,
with the suffix `_1` or `_2`: the embedding columns the model was trained on (`name_bert_64`,
`main_pic_embeddings_resnet_v1`, ...), and where the catalogue has them `name`, `description`,
`characteristic_attributes_mapping`, `categories` and `pic_embeddings_resnet_v1`. A missing column
or value is what it is in a catalogue: a zero embedding, or a field feature marked missing. The
scorer normalises what the model needs normalised and computes the pair features itself, with the
text model fitted at `prepare`, so the server and `matching predict` give a pair the same score.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from matching_cli.data.feature_store import (
    EXTRA_PICTURES,
    MAIN_PICTURE,
    PairFeaturizer,
    load_text_model,
)
from matching_cli.data.features import TextModel, listing_features
from matching_cli.data.readers import row_group_batches
from matching_cli.data.tables import embedding_rows
from matching_cli.errors import DataError
from matching_cli.model.saved import SavedModel, load_model
from matching_cli.model.scoring import predict_proba

SIDES = ("_1", "_2")
FIELDS = ("name", "description", "characteristic_attributes_mapping", "categories")


@dataclass
class RawPairScorer:
    saved: SavedModel
    text_model: TextModel | None  # None: the model reads no field features

    @classmethod
    def load(cls, model_dir: Path, text_model_dir: Path | None) -> RawPairScorer:
        saved = load_model(model_dir, "cpu")
        needs_text = bool(saved.classifier.config.feature_names)
        return cls(
            saved, load_text_model(text_model_dir) if needs_text and text_model_dir else None
        )

    def score(self, frame: pd.DataFrame) -> np.ndarray:
        """Match probability of each row's pair, float32."""
        missing = [
            f"{b.name}{s}" for s in SIDES for b in self.saved.blocks if f"{b.name}{s}" not in frame
        ]
        if missing:
            raise DataError(f"the request lacks the columns {missing}; see README, Serving")
        n = len(frame)
        items = np.concatenate([self._embeddings(frame, side) for side in SIDES])
        left, right = np.arange(n), np.arange(n) + n
        features = None
        if self.text_model is not None:
            names, *others = (_both(frame, name) for name in FIELDS)
            listings = listing_features(
                self.text_model,
                [None] * (2 * n) if names is None else names,  # no names: missing, as a null one
                *others,
                main_pictures=_both(frame, MAIN_PICTURE),
                extra_pictures=_both(frame, EXTRA_PICTURES),
            )
            names = self.saved.classifier.config.feature_names
            features = torch.from_numpy(PairFeaturizer(listings, names)(left, right))
        probability = predict_proba(
            self.saved.classifier,
            torch.from_numpy(items),
            torch.from_numpy(left),
            torch.from_numpy(right),
            features,
        )
        return probability.numpy().astype(np.float32)

    def _embeddings(self, frame: pd.DataFrame, side: str) -> np.ndarray:
        blocks = [
            embedding_rows(_arrow(frame[f"{b.name}{side}"]), f"{b.name}{side}", b.dim)
            for b in self.saved.blocks
        ]
        return np.concatenate(blocks, axis=1)


def request_fields(saved: SavedModel) -> list[str]:
    """The fields a request gives per listing (each with `_1` and `_2`): the embedding blocks
    (required), then, for a model that reads field features, the fields they come from."""
    wanted = [b.name for b in saved.blocks]
    if saved.classifier.config.feature_names:
        wanted += [*FIELDS, MAIN_PICTURE, EXTRA_PICTURES]
    return list(dict.fromkeys(wanted))


def _both(frame: pd.DataFrame, name: str) -> list[Any] | None:
    """Side 1's values, then side 2's, as plain Python values; None when the request lacks them."""
    if f"{name}_1" not in frame or f"{name}_2" not in frame:
        return None
    return [_plain(v) for side in SIDES for v in frame[f"{name}{side}"]]


def _plain(value: Any) -> Any:
    """A JSON request gives lists; a DataFrame from parquet gives numpy arrays of arrays."""
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value]
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, dict):  # attributes or categories sent as JSON, not as its text
        return json.dumps(value, ensure_ascii=False)
    return value


def _arrow(values: pd.Series) -> pa.Array:
    return pa.array([_plain(v) for v in values])


def request_frame(
    data_dir: Path | str, variantid1: np.ndarray, variantid2: np.ndarray, names: list[str]
) -> pd.DataFrame:
    """A request for the pairs (variantid1[k], variantid2[k]) built from the raw files: the columns
    `names` (without side suffix) of each listing, wherever a file of the folder has them."""
    # Compared as int64, as every table's ids are (`readers.int64_ids`): whatever integer type a
    # file stores them in.
    keys = pa.array(np.unique(np.concatenate([variantid1, variantid2]).astype(np.int64)))
    found: dict[str, dict[int, Any]] = {}
    for path in sorted(Path(data_dir).glob("*.parquet")):
        pf = pq.ParquetFile(path)
        schema = pf.schema_arrow
        here = [n for n in names if n in schema.names and n not in found]
        if "variantid" not in schema.names or not here:
            continue
        rows = [batch.filter(pc.is_in(_ids(batch), keys)) for batch in _batches(pf, keys, here)]
        ids = [v for batch in rows for v in _ids(batch).to_pylist()]
        for name in here:
            values = [v for batch in rows for v in batch.column(name).to_pylist()]
            found[name] = dict(zip(ids, values, strict=True))
    frame = {}
    for side, ids in zip(SIDES, (variantid1, variantid2), strict=True):
        for name, values in found.items():
            frame[f"{name}{side}"] = [values.get(int(v)) for v in ids]
    return pd.DataFrame(frame)


def _ids(batch: pa.RecordBatch | pa.Table) -> pa.Array | pa.ChunkedArray:
    """The first column, the variantids, as int64."""
    return batch.column(0).cast(pa.int64())


def _batches(pf: pq.ParquetFile, keys: pa.Array, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The row groups of `pf` that hold the variantids `keys`, with `columns`, in batches (a file
    of one row group is not decoded whole at once): the variantid column is read first. (Every
    row group read decoded all the pictures of the real size: 11.8 s for the 4 listings of
    `train`'s example.)"""
    where = pc.fill_null(pc.is_in(_ids(pf.read(columns=["variantid"])), keys), False)
    rows = np.flatnonzero(where.to_numpy())
    sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
    groups = np.unique(np.searchsorted(np.cumsum(sizes), rows, side="right"))
    return row_group_batches(pf, ["variantid", *columns], groups=groups.tolist())
