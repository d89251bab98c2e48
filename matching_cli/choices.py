"""The closed sets of values that options, settings and runs use, each declared once.

They are `StrEnum`s: Typer lists their values in `--help` and refuses others at parse time (exit 2),
pydantic refuses others when settings load, and a member compares equal to its value, so JSON,
MLflow params and old saved models keep plain strings.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Source(StrEnum):
    """Where `matching download` gets the competition files."""

    yandex = "yandex"  # the public Yandex Disk link
    dvc = "dvc"  # `dvc pull data.dvc`


class BlockingMethod(StrEnum):
    """How `matching match` finds each listing's nearest neighbours."""

    auto = "auto"  # exact on a GPU or a small catalogue, ivf otherwise
    exact = "exact"
    ivf = "ivf"  # approximate: faiss inverted lists
    hnsw = "hnsw"  # approximate: a faiss HNSW graph


class OnMissing(StrEnum):
    """What `matching predict` does with a pair whose listing is in no table."""

    error = "error"
    zero = "zero"  # score it 0: no listing, no evidence of a match
    drop = "drop"  # leave it out of the output


class Engine(StrEnum):
    """What scores the pairs of `matching predict`."""

    local = "local"  # this process, from the prepared store
    spark = "spark"  # Apache Spark, from the raw files, with the run's served MLflow model


class PairFeatures(StrEnum):
    """How the pair model combines two listings' embeddings."""

    symmetric = "symmetric"  # |a-b|, a*b, a+b and the cosine per block: score(a, b) == score(b, a)
    concat = "concat"  # the original project's [a, b]


class Head(StrEnum):
    """What turns a pair's features into a match probability."""

    auto = "auto"  # chosen when training starts (`settings.auto_head`): by data size and options
    mlp = "mlp"  # a neural network on the embedding interactions and the pair features
    trees = "trees"  # gradient-boosted trees on the pair features and the embeddings' cosines


class FeatureFamily(StrEnum):
    """Families of pair features from the listings' own fields (see `data/pairs.py`)."""

    text = "text"  # TF-IDF cosines and token overlap of names and descriptions
    digits = "digits"  # tokens with digits: model codes, capacities, sizes
    attributes = "attributes"  # shared attribute keys, equal and conflicting values
    categories = "categories"  # the same category at levels 2, 3, 4
    pictures = "pictures"  # best and mean cosine over all picture pairs


class DeviceKind(StrEnum):
    """The kinds of device `--device` names; `cuda:N` picks one card."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
    mps = "mps"


class StopReason(StrEnum):
    """Why the training loop stopped before its last epoch."""

    early_stopping = "early_stopping"
    interrupted = "interrupted"
    diverged = "diverged"  # the loss became NaN or infinite: the learning rate is too high


class RunStatus(StrEnum):
    """MLflow's names for how a run ended (or, killed without a word, stands)."""

    finished = "FINISHED"
    failed = "FAILED"
    killed = "KILLED"
    running = "RUNNING"
    scheduled = "SCHEDULED"


_DEVICE = re.compile(r"(auto|cpu|mps|cuda)(:\d+)?")
DEVICE_HELP = "auto, cpu, cuda, cuda:N or mps"


def check_device(name: str) -> str:
    """`name` if it names a device kind (with an index for cuda only); ValueError otherwise.

    Whether that device exists here is known only when a command runs (`resolve_device`)."""
    found = _DEVICE.fullmatch(name)
    if found is None or (found.group(2) and found.group(1) != DeviceKind.cuda):
        raise ValueError(f"{name!r} is not a device; use {DEVICE_HELP}")
    return name
