"""The prepared data set: item matrix, pair splits and a manifest, written once and reused.

`prepared/` holds `items.npy` (memory-mapped on load), `item_ids.npy`, `missing.npy`,
`item_category.npy`, `pairs.npz` and `manifest.json`. The manifest records fingerprints of the raw
files and the data settings used, so a later command knows when to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from matching_cli.data.tables import (
    ATTRIBUTES_FILE,
    PAIRS_FILE,
    TEXT_FILE,
    Block,
    Items,
    image_file,
    load_items,
    read_categories,
    read_pairs,
)
from matching_cli.errors import DataError
from matching_cli.files import atomic_dir, check_replaceable_dir
from matching_cli.progress import NullReporter, Reporter
from matching_cli.settings import DataSettings

log = logging.getLogger(__name__)

FORMAT = 1
SPLITS = ("train", "val", "test")
# Settings that change the prepared arrays; the folders themselves do not.
_SETTINGS_KEYS = ("blocks", "split", "val_size", "test_size", "split_seed")


@dataclass
class PairSet:
    left: np.ndarray
    right: np.ndarray
    target: np.ndarray
    category: np.ndarray  # level-2 category code of the first listing, -1 unknown

    def __len__(self) -> int:
        return len(self.left)


@dataclass
class Prepared:
    items: Items
    item_category: np.ndarray  # level-2 category code per item, -1 unknown
    category_names: list[str]
    splits: dict[str, PairSet]
    manifest: dict

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]


@dataclass
class SplitReport:
    method: str
    largest_component_share: float
    sizes: dict[str, int] = field(default_factory=dict)
    positive_share: dict[str, float] = field(default_factory=dict)


def source_files(data_dir: Path) -> list[Path]:
    for name in (PAIRS_FILE, TEXT_FILE):
        if not (data_dir / name).is_file():
            raise DataError(
                f"{data_dir / name}: file not found; run `matching download` (or --synthetic)"
            )
    files = [data_dir / PAIRS_FILE, data_dir / TEXT_FILE, image_file(data_dir)]
    if (data_dir / ATTRIBUTES_FILE).is_file():
        files.append(data_dir / ATTRIBUTES_FILE)
    return files


def fingerprint_file(path: Path) -> str:
    """Size plus the parquet footer (schema and row-group statistics): cheap, and content-sensitive."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        f.seek(max(0, size - 65536))
        digest.update(f.read())
    return digest.hexdigest()[:16]


def _expected_manifest(data: DataSettings) -> dict:
    if not data.dir.is_dir():
        raise DataError(
            f"data folder {data.dir} not found; run `matching download` (or --synthetic)"
        )
    sources = {p.name: fingerprint_file(p) for p in source_files(data.dir)}
    settings = {k: v for k, v in data.model_dump(mode="json").items() if k in _SETTINGS_KEYS}
    digest = hashlib.sha256(json.dumps([sources, settings], sort_keys=True).encode())
    return {
        "format": FORMAT,
        "sources": sources,
        "settings": settings,
        "fingerprint": digest.hexdigest()[:16],
    }


def is_fresh(data: DataSettings) -> bool:
    manifest_path = data.prepared_dir / "manifest.json"
    if not manifest_path.is_file():
        return False
    manifest = json.loads(manifest_path.read_text())
    expected = _expected_manifest(data)
    return all(manifest.get(k) == v for k, v in expected.items())


def prepare(data: DataSettings, reporter: Reporter | None = None) -> tuple[Prepared, SplitReport]:
    reporter = reporter or NullReporter()
    manifest = _expected_manifest(data)
    check_replaceable_dir(data.prepared_dir, "manifest.json", "data.prepared_dir")
    with atomic_dir(data.prepared_dir) as out:
        # The item matrix is filled straight in its file: no second copy in memory, no write after.
        def allocate(shape: tuple[int, int]) -> np.ndarray:
            return np.lib.format.open_memmap(out / "items.npy", "w+", np.float32, shape)

        items = load_items(data.dir, data.blocks, reporter, allocate)
        pairs = read_pairs(data.dir / PAIRS_FILE, items, labelled=True)
        item_category, category_names = read_categories(data.dir, items.ids)
        split, report = split_pairs(pairs.left, pairs.right, pairs.target, data)
        manifest |= {
            "blocks": [asdict(b) for b in items.blocks],
            "categories": category_names,
            "counts": {"listings": len(items.ids), "pairs": len(pairs.left), **report.sizes},
            "missing": {b.name: int(items.missing[:, i].sum()) for i, b in enumerate(items.blocks)},
            "split": asdict(report),
            "pairs_left_out": pairs.dropped,
        }
        items.matrix.flush()
        np.save(out / "item_ids.npy", items.ids)
        np.save(out / "missing.npy", items.missing)
        np.save(out / "item_category.npy", item_category)
        np.savez(
            out / "pairs.npz",
            left=pairs.left,
            right=pairs.right,
            target=pairs.target,
            split=split,
            variantid1=pairs.variantid1,
            variantid2=pairs.variantid2,
        )
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False))
    return load_prepared(data.prepared_dir), report


def load_prepared(prepared_dir: Path) -> Prepared:
    manifest_path = prepared_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{prepared_dir}: no prepared data; run `matching prepare`")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise DataError(f"{prepared_dir}: prepared by another version; run `matching prepare`")
    items = Items(
        ids=np.load(prepared_dir / "item_ids.npy"),
        matrix=np.load(prepared_dir / "items.npy", mmap_mode="r"),
        missing=np.load(prepared_dir / "missing.npy"),
        blocks=[Block(**b) for b in manifest["blocks"]],
    )
    item_category = np.load(prepared_dir / "item_category.npy")
    with np.load(prepared_dir / "pairs.npz") as z:
        arrays = {k: z[k] for k in z.files}
    splits = {}
    for code, name in enumerate(SPLITS):
        mask = arrays["split"] == code
        left = arrays["left"][mask]
        splits[name] = PairSet(
            left, arrays["right"][mask], arrays["target"][mask], item_category[left]
        )
    return Prepared(items, item_category, manifest["categories"], splits, manifest)


def ensure_prepared(data: DataSettings, reporter: Reporter | None = None) -> Prepared:
    """The prepared data, rebuilt first when it is missing or older than its sources or settings."""
    if is_fresh(data):
        return load_prepared(data.prepared_dir)
    reason = "missing" if not (data.prepared_dir / "manifest.json").is_file() else "stale"
    log.info("Prepared data in %s is %s: preparing it now", data.prepared_dir, reason)
    return prepare(data, reporter)[0]


def split_pairs(
    left: np.ndarray, right: np.ndarray, target: np.ndarray, data: DataSettings
) -> tuple[np.ndarray, SplitReport]:
    """Split code per pair (0 train, 1 val, 2 test)."""
    rng = np.random.default_rng(data.split_seed)
    n = len(left)
    if data.split == "random":
        groups, method, largest = rng.permutation(n), "random", 0.0
    else:
        groups, largest = _components(left, right)
        method = "disjoint"
        too_big = np.bincount(groups)[groups] > _group_limit(n, data)
        if too_big.mean() > 0.5:
            # One giant component: listings cannot all stay in one split. Keep the first listing
            # of each pair in one split, the best disjointness left.
            log.warning(
                "The pair graph is dense (its largest component holds %.0f%% of the pairs): "
                "splitting by the first listing of each pair instead; the second may repeat across splits",
                100 * largest,
            )
            groups = np.where(too_big, left + groups.max() + 1, groups)
            method = "disjoint-first-listing"
    split = _assign(groups, n, data, rng)
    report = SplitReport(method, largest)
    for code, name in enumerate(SPLITS):
        mask = split == code
        report.sizes[name] = int(mask.sum())
        report.positive_share[name] = float(target[mask].mean()) if mask.any() else 0.0
    if min(report.sizes.values()) == 0:
        raise DataError(f"too few pairs ({n}) to fill the train, validation and test splits")
    return split, report


def _components(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, float]:
    nodes, inverse = np.unique(np.concatenate([left, right]), return_inverse=True)
    a, b = inverse[: len(left)], inverse[len(left) :]
    graph = coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(len(nodes), len(nodes)))
    _, labels = connected_components(graph, directed=False)
    groups = labels[a]
    return groups, float(np.bincount(groups).max() / len(groups))


def _group_limit(n: int, data: DataSettings) -> float:
    # A group larger than a quarter of the smallest held-out split cannot be placed without making
    # that split lopsided, so it goes to training.
    return max(1.0, 0.25 * n * min(data.val_size, data.test_size))


def _assign(groups: np.ndarray, n: int, data: DataSettings, rng: np.random.Generator) -> np.ndarray:
    group_ids, compact = np.unique(groups, return_inverse=True)
    sizes = np.bincount(compact)
    order = rng.permutation(len(group_ids))
    placeable = order[sizes[order] <= _group_limit(n, data)]
    filled = np.cumsum(sizes[placeable])
    code = np.zeros(len(group_ids), dtype=np.int8)
    test_end = np.searchsorted(filled, round(data.test_size * n))
    val_end = np.searchsorted(filled, round((data.test_size + data.val_size) * n))
    code[placeable[: test_end + 1]] = 2
    code[placeable[test_end + 1 : val_end + 1]] = 1
    return code[compact]
