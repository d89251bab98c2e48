"""The prepared data set: item matrix, pair splits and a manifest, written once and reused.

`prepared/` holds one store per fingerprint of the raw files and the data settings
(`prepared/<fingerprint>/`), so that models trained under other split settings each find theirs
without rebuilding another's, and a model's own store serves it when the raw files are gone. A
store holds `items.npy` (memory-mapped on load), `item_ids.npy`, `missing.npy`,
`item_category.npy`, `pairs.npz` and `manifest.json`. The few most recently used stores are kept.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import zipfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from matching_cli.data.feature_store import (
    LISTINGS_DIR,
    PAIR_FEATURES,
    TEXT_MODEL,
    features_started,
    load_listings,
    load_text_model,
    write_pair_features,
)
from matching_cli.data.features import Listings
from matching_cli.data.layout import (
    ATTRIBUTES_FILE,
    IMAGE_FILES,
    PAIRS_FILE,
    REQUIRED_FILES,
    TEXT_FILE,
    missing_required,
)
from matching_cli.data.pairs import feature_names
from matching_cli.data.readers import check_input_file
from matching_cli.data.tables import (
    Block,
    Items,
    ItemTables,
    Pairs,
    image_file,
    load_items,
    read_categories,
    read_pairs,
)
from matching_cli.errors import DataError
from matching_cli.files import (
    atomic_dir,
    check_own_folder,
    content_digest,
    remove_leftovers,
    stat_key,
)
from matching_cli.progress import NullReporter, Reporter, closing
from matching_cli.settings import DataSettings

log = logging.getLogger(__name__)

# 2: pair features from the listings' own fields; 3: computed per distinct word; 4: the sparse
# fields of a listing side by side (`features.TEXT_FIELDS`), read in one piece; 5: their entries
# counted per listing (`Listings.text_counts`); 6: picture vectors divided by their norm, as the
# item matrix and the served model do (multiplied by its reciprocal, a few came out one float16
# step apart)
FORMAT = 6
FINGERPRINT_CHARS = 16  # a store is named by its fingerprint: the only folders pruning touches
KEEP_STORES = 3  # prepared stores kept, the most recently used first
SPLITS = ("train", "val", "test")
# Settings that change the prepared arrays; the folders themselves do not.
_SETTINGS_KEYS = ("blocks", "split", "val_size", "test_size", "split_seed", "listing_features")
# Those of them that change only which split each labelled pair is in: stores that differ in these
# (and in the labelled pairs) alone have the same listings' arrays, which the later one shares.
_SPLIT_KEYS = ("split", "val_size", "test_size", "split_seed")
# What a store holds per listing, and what the features stage writes into it.
_LISTING_PARTS = ("items.npy", "item_ids.npy", "missing.npy", "item_category.npy")
_FEATURE_PARTS = (LISTINGS_DIR, TEXT_MODEL)


# What reading a store's files cut short raises (numpy, zip, JSON).
_DAMAGE = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


class DamagedStore(DataError):
    """A store whose files cannot be read back (cut short by a crash or a full disk)."""

    def __init__(self, store: Path, reason: str):
        self.reason = reason
        super().__init__(f"{store}: prepared data is damaged ({reason}); run `matching prepare`")


@dataclass
class PairSet:
    left: np.ndarray
    right: np.ndarray
    target: np.ndarray
    category: np.ndarray  # level-2 category code of the first listing, -1 unknown
    features: np.ndarray  # (n, len(Prepared.feature_names)) float32 pair features

    def __len__(self) -> int:
        return len(self.left)


@dataclass
class Prepared:
    items: Items
    item_category: np.ndarray  # level-2 category code per item, -1 unknown
    category_names: list[str]
    splits: dict[str, PairSet]
    manifest: dict
    store: Path

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def feature_names(self) -> list[str]:
        return self.manifest["pair_features"]

    def listings(self) -> Listings:
        """The per-listing feature arrays, to compute the features of pairs not prepared here."""
        try:
            return load_listings(self.store)
        except _DAMAGE as e:
            raise DamagedStore(self.store, f"{type(e).__name__}: {e}") from e


@dataclass
class SplitReport:
    method: str
    largest_component_share: float
    sizes: dict[str, int] = field(default_factory=dict)
    positive_share: dict[str, float] = field(default_factory=dict)


def source_files(data_dir: Path) -> list[Path]:
    """The raw files `prepare` reads: the pairs and the texts, which it cannot do without, then
    the image table and the attributes where the catalogue has them."""
    for name in (*REQUIRED_FILES, ATTRIBUTES_FILE, *IMAGE_FILES):
        if os.path.lexists(data_dir / name) and not (data_dir / name).is_file():
            check_input_file(data_dir / name)  # a folder or a broken link: named, not "absent"
    missing = missing_required(data_dir)
    if missing:
        remedy = "run `matching download` (or --synthetic)"
        if len(missing) < len(REQUIRED_FILES):  # a catalogue of one's own, a file short
            remedy = f"a catalogue needs {' and '.join(REQUIRED_FILES)} (README: Data); " + remedy
        raise DataError(f"{data_dir / missing[0]}: file not found; {remedy}")
    files = [data_dir / PAIRS_FILE, data_dir / TEXT_FILE]
    images = image_file(data_dir)
    if images is not None:
        files.append(images)
    if (data_dir / ATTRIBUTES_FILE).is_file():
        files.append(data_dir / ATTRIBUTES_FILE)
    return files


def _expected_manifest(data: DataSettings) -> dict:
    if not data.dir.is_dir():
        raise DataError(
            f"data folder {data.dir} not found; run `matching download` (or --synthetic)"
        )
    files = source_files(data.dir)
    stats = {p.name: [str(p.resolve()), *stat_key(p)] for p in files}
    recorded = _known_digests(data.prepared_dir)
    sources = {p.name: recorded.get(json.dumps(stats[p.name])) for p in files}
    sources |= _digests([p for p in files if sources[p.name] is None])
    settings = {k: v for k, v in data.model_dump(mode="json").items() if k in _SETTINGS_KEYS}
    digest = hashlib.sha256(json.dumps([sources, settings], sort_keys=True).encode())
    return {
        "format": FORMAT,
        "code": code_digest(),
        "sources": sources,
        "settings": settings,
        "fingerprint": digest.hexdigest()[:FINGERPRINT_CHARS],
        "source_stats": stats,  # not compared: what lets the next command skip hashing
    }


_COMPARED = ("format", "code", "sources", "settings", "fingerprint")


@cache
def code_digest() -> str:
    """A digest of the code that makes a store (this package's `data/`): a store made by other
    code is made again, as one of another format is (`dvc repro` reran prepare on a change there,
    and it said the store was up to date). Not in the fingerprint: a model finds its store
    whatever made it."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _digests(paths: list[Path]) -> dict[str, str]:
    """`content_digest` of each file, by name, a thread a core (hashing and reading let go of the
    GIL), the largest first: the real size's 3.2 GB took 1.6 s instead of 2.3-2.5 s one by one."""
    sizes = {path: path.stat().st_size for path in paths}
    for path, size in sizes.items():
        if size > 256 << 20:
            log.info("Hashing %s (%.1f GB) to notice any change in it", path, size / 1e9)
    largest_first = sorted(paths, key=sizes.__getitem__, reverse=True)
    with ThreadPoolExecutor(max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        digests = list(pool.map(content_digest, largest_first))
    return {path.name: digest for path, digest in zip(largest_first, digests, strict=True)}


def _known_digests(prepared_dir: Path) -> dict[str, str]:
    """Digests the stores recorded, by the file's path and stat: a file that has not been touched
    since is not read again (hashing 3 GB takes seconds)."""
    known = {}
    for store in stores(prepared_dir):
        manifest = _read_manifest(store)
        for name, stats in (manifest or {}).get("source_stats", {}).items():
            if name in manifest.get("sources", {}):
                known[json.dumps(stats)] = manifest["sources"][name]
    return known


def _read_manifest(store: Path) -> dict | None:
    """The store's manifest; None when it is missing or damaged (a crash, a full disk)."""
    try:
        manifest = json.loads((store / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def store_dir(prepared_dir: Path, fingerprint: str) -> Path:
    return prepared_dir / fingerprint


def _is_store_name(name: str) -> bool:
    return len(name) == FINGERPRINT_CHARS and all(c in "0123456789abcdef" for c in name)


def stores(prepared_dir: Path) -> list[Path]:
    """The complete stores under `prepared_dir`, the most recently used first."""
    found = [
        p.parent for p in prepared_dir.glob("*/manifest.json") if _is_store_name(p.parent.name)
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


def _is_fresh(store: Path, expected: dict) -> bool:
    manifest = _read_manifest(store)
    return manifest is not None and all(manifest.get(k) == expected[k] for k in _COMPARED)


def is_fresh(data: DataSettings) -> bool:
    expected = _expected_manifest(data)
    return _is_fresh(store_dir(data.prepared_dir, expected["fingerprint"]), expected)


def prepare(
    data: DataSettings,
    reporter: Reporter | None = None,
    share: bool = True,
    manifest: dict | None = None,
) -> tuple[Prepared, SplitReport]:
    """The store of today's raw files and these data settings, written anew; with `share`, from
    another store's listing arrays where one has them (`_shared`). `manifest`: what
    `_expected_manifest` gave the caller just now (a cold store's sources are not hashed twice:
    1.6 s of the real size's)."""
    manifest = manifest or _expected_manifest(data)
    # Stores are written and pruned inside it: pointed at the data folder, or at `.`, pruning and
    # DVC would mix with the user's files.
    check_own_folder(
        data.prepared_dir,
        lambda name: name.startswith(".") or _is_store_name(name),
        "data.prepared_dir",
        "point it at a folder of its own",
    )
    store = store_dir(data.prepared_dir, manifest["fingerprint"])
    reporter = reporter or NullReporter()
    with closing(reporter.task("preparing the data", total=None, unit="pairs")) as task:
        try:
            report = _write_store(data, manifest, store, reporter, share)
        except BaseException:
            if data.prepared_dir.is_dir() and not any(data.prepared_dir.iterdir()):
                data.prepared_dir.rmdir()  # bad data leaves no trace, not even an empty folder
            raise
        prepared = load_prepared(store)
        _prune(data.prepared_dir)
        task.advance(sum(report.sizes.values()))
    return prepared, report


def _write_store(
    data: DataSettings, manifest: dict, store: Path, reporter: Reporter, share: bool
) -> SplitReport:
    donor = _donor(data.prepared_dir, manifest) if share else None
    with atomic_dir(store) as out:
        listings = _shared(*donor, data, out, reporter) if donor is not None else None
        if listings is None:
            listings = _made(data, out, reporter)
        items, pairs = listings.items, listings.pairs
        split, report = split_pairs(pairs.left, pairs.right, pairs.target, data)
        manifest |= {
            "pair_features": listings.feature_names,
            "blocks": [asdict(b) for b in items.blocks],
            "categories": listings.category_names,
            "counts": {"listings": len(items.ids), "pairs": len(pairs.left), **report.sizes},
            "missing": {b.name: int(items.missing[:, i].sum()) for i, b in enumerate(items.blocks)},
            "split": asdict(report),
            "pairs_left_out": pairs.dropped,
        }
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
    return report


@dataclass
class _StoreListings:
    """What a store holds beside its split: the listings' arrays and the labelled pairs."""

    items: Items
    pairs: Pairs
    category_names: list[str]
    feature_names: list[str]


def _made(data: DataSettings, out: Path, reporter: Reporter) -> _StoreListings:
    """The listings' arrays and the labelled pairs' features made from the raw files, into
    `out`."""

    # The item matrix is filled straight in its file: no second copy in memory, no write after.
    def allocate(shape: tuple[int, int]) -> np.ndarray:
        return np.lib.format.open_memmap(out / "items.npy", "w+", np.float32, shape)

    tables = ItemTables.of(data.dir, data.blocks)
    # The features stage starts first, in a second process: the listings' ids are all it needs.
    features = features_started if data.listing_features else _no_features
    with features(data.dir, tables.ids, out, reporter) as write_features:
        items = load_items(tables, reporter, allocate)
        # Written pages of a mapped file stay in this process's memory while it is mapped: map
        # it again to read, and the features stage has the 1.8 GB of the full data's back.
        items.matrix.flush()
        items.matrix = np.load(out / "items.npy", mmap_mode="r")
        pairs = read_pairs(data.dir / PAIRS_FILE, items, labelled=True)
        item_category, category_names = read_categories(data.dir, items.ids)
        names = write_features(items, pairs.left, pairs.right)
    np.save(out / "item_ids.npy", items.ids)
    np.save(out / "missing.npy", items.missing)
    np.save(out / "item_category.npy", item_category)
    return _StoreListings(items, pairs, category_names, names)


@contextmanager
def _no_features(
    data_dir: Path, ids: np.ndarray, out: Path, reporter: Reporter
) -> Iterator[Callable[[Items, np.ndarray, np.ndarray], list[str]]]:
    """`features_started` for the embeddings only: an empty feature table keeps the store's
    shape."""
    yield lambda items, left, right: write_pair_features(out, None, left, right, reporter)


def _donor(prepared_dir: Path, manifest: dict) -> tuple[Path, dict] | None:
    """The most recently used store (and its manifest) that a store of `manifest` can share its
    listings' arrays with: made by this version from the same listing tables (the labelled pairs
    may differ) under the same data settings but the split's."""
    wanted = _of_listings(manifest)
    for store in stores(prepared_dir) if prepared_dir.is_dir() else ():
        if store.name != manifest["fingerprint"]:  # one prepared again is stale or damaged
            other = _read_manifest(store)
            if other is not None and _of_listings(other) == wanted:
                return store, other
    return None


def _of_listings(manifest: dict) -> list:
    """What a store's listings' arrays depend on: its format and code, the raw files but the
    labelled pairs, the data settings but the split's, and the pair features this version computes."""
    settings = manifest.get("settings", {})
    computed = feature_names() if settings.get("listing_features") else []
    return [
        manifest.get("format"),
        manifest.get("code"),
        {k: v for k, v in manifest.get("sources", {}).items() if k != PAIRS_FILE},
        {k: v for k, v in settings.items() if k not in _SPLIT_KEYS},
        manifest.get("pair_features", computed),
    ]


def _shared(
    donor: Path, manifest: dict, data: DataSettings, out: Path, reporter: Reporter
) -> _StoreListings | None:
    """`donor`'s listings' arrays (`manifest`: its manifest) hard-linked into `out` (no copy:
    either store can be removed without the other), the labelled pairs read again, and their
    features linked too where they are the donor's pairs, else computed: what another split, or
    new labels, need. None, and nothing left in `out`, where the donor's files are damaged or
    cannot be linked."""
    parts = _LISTING_PARTS + (_FEATURE_PARTS if data.listing_features else ())
    try:
        for part in parts:
            if (donor / part).is_dir():
                shutil.copytree(donor / part, out / part, copy_function=os.link)
            else:
                os.link(donor / part, out / part)
        items = _store_items(out, manifest)
        listings = _whole_listings(out) if data.listing_features else None
        pairs = read_pairs(data.dir / PAIRS_FILE, items, labelled=True)
        with np.load(donor / "pairs.npz") as z:
            same = np.array_equal(z["left"], pairs.left) and np.array_equal(z["right"], pairs.right)
        if same:
            os.link(donor / PAIR_FEATURES, out / PAIR_FEATURES)
            rows = np.load(out / PAIR_FEATURES, mmap_mode="r")
            if rows.shape != (len(pairs.left), len(manifest["pair_features"])):
                raise ValueError(f"{PAIR_FEATURES} has shape {rows.shape}")
        names = manifest["pair_features"]
    except (*_DAMAGE, shutil.Error) as e:
        log.info("Prepared data in %s not shared (%s): preparing it all", donor, e)
        for part in (*parts, PAIR_FEATURES):  # a link written into would change the donor's too
            shutil.rmtree(out / part, ignore_errors=True)
            (out / part).unlink(missing_ok=True)
        return None
    log.info(
        "Sharing the listings' arrays of %s (the same listing tables%s)",
        donor,
        ", the same labelled pairs" if same else "; the labelled pairs' features computed",
    )
    if not same:
        names = write_pair_features(out, listings, pairs.left, pairs.right, reporter)
    return _StoreListings(items, pairs, manifest["categories"], names)


def _prune(prepared_dir: Path, keep: int = KEEP_STORES) -> None:
    # What a run killed while it wrote another store left (a store's worth each).
    remove_leftovers(prepared_dir)
    for old in stores(prepared_dir)[keep:]:
        log.info("Removing the prepared data in %s (used least recently)", old)
        shutil.rmtree(old, ignore_errors=True)


def load_prepared(prepared_dir: Path) -> Prepared:
    """One store (`prepared/<fingerprint>/`), marked as used now."""
    manifest_path = prepared_dir / "manifest.json"
    if not manifest_path.is_file():
        raise DataError(f"{prepared_dir}: no prepared data; run `matching prepare`")
    manifest = _read_manifest(prepared_dir)
    if manifest is None:
        raise DamagedStore(prepared_dir, "manifest.json is not JSON")
    try:
        return _load_store(prepared_dir, manifest)
    except _DAMAGE as e:
        raise DamagedStore(prepared_dir, f"{type(e).__name__}: {e}") from e


def _load_store(prepared_dir: Path, manifest: dict) -> Prepared:
    if manifest.get("format") != FORMAT:
        raise DataError(f"{prepared_dir}: prepared by another version; run `matching prepare`")
    now = time.time_ns()  # a fine clock: the file system's own ticks are coarser than a command
    os.utime(prepared_dir, ns=(now, now))  # what pruning goes by
    items = _store_items(prepared_dir, manifest)
    item_category = np.load(prepared_dir / "item_category.npy")
    with np.load(prepared_dir / "pairs.npz") as z:
        arrays = {k: z[k] for k in z.files}
    features = np.load(prepared_dir / PAIR_FEATURES, mmap_mode="r")
    if manifest["pair_features"]:
        # Checked here, where a damaged store is prepared again, not when `predict` reads the
        # arrays or the served model that `train` logged fails to load its text model.
        _whole_listings(prepared_dir)
    splits = {}
    for code, name in enumerate(SPLITS):
        mask = arrays["split"] == code
        left = arrays["left"][mask]
        splits[name] = PairSet(
            left,
            arrays["right"][mask],
            arrays["target"][mask],
            item_category[left],
            np.asarray(features[mask]),
        )
    return Prepared(items, item_category, manifest["categories"], splits, manifest, prepared_dir)


def _whole_listings(store: Path) -> Listings:
    """The store's listing arrays, mapped, once its text model is read too (10 ms at the real
    size): a file of either cut short raises."""
    load_text_model(store / TEXT_MODEL)
    return load_listings(store)


def _store_items(store: Path, manifest: dict) -> Items:
    return Items(
        ids=np.load(store / "item_ids.npy"),
        matrix=np.load(store / "items.npy", mmap_mode="r"),
        missing=np.load(store / "missing.npy"),
        blocks=[Block(**b) for b in manifest["blocks"]],
    )


def ensure_prepared(data: DataSettings, reporter: Reporter | None = None) -> Prepared:
    """The store for today's raw files and these data settings, prepared first when missing."""
    return prepared_now(data, reporter)[0]


def prepared_now(
    data: DataSettings, reporter: Reporter | None = None, force: bool = False
) -> tuple[Prepared, SplitReport]:
    """`ensure_prepared` and the store's split report: a store that is up to date and whole is
    used as it is (unless `force`), any other prepared, saying why."""
    expected = _expected_manifest(data)
    store = store_dir(data.prepared_dir, expected["fingerprint"])
    if _is_fresh(store, expected) and not force:
        try:
            prepared = load_prepared(store)
        except DamagedStore as e:
            log.warning("Prepared data in %s is damaged (%s): preparing it again", store, e.reason)
            return prepare(data, reporter, manifest=expected)
        log.info("Prepared data in %s is up to date (the same raw files and settings)", store)
        return prepared, SplitReport(**prepared.manifest["split"])
    if force:  # from the raw files: a store that shares its files would pass on their damage
        log.info("Preparing the data in %s again from the raw files (--force)", store)
        return prepare(data, reporter, share=False, manifest=expected)
    if not (store / "manifest.json").is_file():
        log.info("Prepared data in %s is missing: preparing it now", store)
    elif _read_manifest(store) is None:
        log.warning(
            "Prepared data in %s is damaged (manifest.json is not JSON): preparing it again", store
        )
    else:
        log.info("Prepared data in %s is stale: preparing it now", store)
    return prepare(data, reporter, manifest=expected)


def prepared_for(
    data: DataSettings, fingerprint: str, reporter: Reporter | None = None
) -> Prepared:
    """The data a model scores: today's raw files when they are there (new listings count), else
    the store it was trained on, which needs none."""
    store = store_dir(data.prepared_dir, fingerprint)
    if not _sources_present(data.dir) and (store / "manifest.json").is_file():
        log.info("The raw files are gone: using the model's own prepared data in %s", store)
        try:
            return load_prepared(store)
        except DamagedStore as e:
            raise DataError(
                f"{store}: the model's prepared data is damaged ({e.reason}) and the raw files "
                f"in {data.dir} are gone: restore them (`dvc pull`, `matching download`)"
            ) from e
    return ensure_prepared(data, reporter)


def _sources_present(data_dir: Path) -> bool:
    try:
        source_files(data_dir)
    except DataError:
        return False
    return True


SMALL_SPLIT = 30  # pairs: fewer in validation or test, and their figures are mostly chance


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
    for name in SPLITS[1:]:
        size, share = report.sizes[name], report.positive_share[name]
        if size < SMALL_SPLIT or share in (0.0, 1.0):
            kind = "all matches" if share == 1.0 else "no match" if share == 0.0 else "few"
            log.warning(
                "The %s split holds %d pairs (%s): what is chosen or measured on it (the "
                "threshold, the best epoch, the test metrics) means little; label more pairs",
                name,
                size,
                kind,
            )
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
