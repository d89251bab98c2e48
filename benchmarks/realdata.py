"""Pair features on a catalogue in Ozon layout: trees vs MLP vs blend, and each family ablated.

    PYTHONPATH=$PWD python benchmarks/realdata.py                      # WDC computers
    PYTHONPATH=$PWD python benchmarks/realdata.py --data-dir /tmp/demo --test-pairs ""

Test pairs come from --test-pairs (with a target) or, when it is empty, are carved from train.
Validation is 20% of the remaining train pairs, grouped so that no listing sits on both sides when
the pair graph allows it; it picks the MLP's epoch and every model's F1 threshold. The defaults
are ones for any catalogue (nothing here is tuned on WDC).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from sklearn.metrics import average_precision_score, precision_recall_curve

from matching_cli.data.features import fit_text_model, listing_features
from matching_cli.data.pairs import FAMILIES, feature_names, pair_features
from matching_cli.data.text import normalise
from matching_cli.model.trees import TreeSettings, fit

WDC = Path("/work/shared/realdata/wdc_computers")


def load_catalogue(folder: Path):
    """Listings in variantid order: raw columns for the features, normalised embedding blocks."""
    text = pd.read_parquet(folder / "text_and_bert.parquet").sort_values("variantid")
    ids = text["variantid"].to_numpy()
    images = next(
        (
            pd.read_parquet(folder / f)
            for f in ("images_embed.parquet", "resnet.parquet")
            if (folder / f).exists()
        ),
        None,
    )
    attrs = (
        pd.read_parquet(folder / "attributes.parquet")
        if (folder / "attributes.parquet").exists()
        else None
    )
    if images is not None:
        images = images.set_index("variantid").reindex(ids)
    if attrs is not None:
        attrs = attrs.set_index("variantid").reindex(ids)

    def column(frame, name):
        return None if frame is None or name not in frame.columns else frame[name].tolist()

    main = column(images, "main_pic_embeddings_resnet_v1")
    raw = {
        "names": text["name"].tolist(),
        "descriptions": column(text, "description"),
        "attributes": column(attrs, "characteristic_attributes_mapping"),
        "categories": column(attrs, "categories"),
        "main_pictures": main,
        "extra_pictures": column(images, "pic_embeddings_resnet_v1"),
    }
    blocks = [_block(text["name_bert_64"].tolist())]
    if main is not None:
        blocks.append(_block([v[0] if v is not None and len(v) else None for v in main]))
    return ids, raw, blocks


def _block(values: list) -> np.ndarray:
    dim = next(len(v) for v in values if v is not None)
    out = np.zeros((len(values), dim), dtype=np.float32)
    for i, v in enumerate(values):
        if v is not None and len(v) == dim:
            out[i] = v
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms > 0, norms, 1)


def embedding_features(blocks: list[np.ndarray], a: np.ndarray, b: np.ndarray) -> np.ndarray:
    parts = []
    for block in blocks:
        x, y = block[a], block[b]
        parts += [np.abs(x - y), x * y, (x * y).sum(1, keepdims=True)]
    return np.hstack(parts).astype(np.float32)


def grouped_split(a: np.ndarray, b: np.ndarray, share: float, rng) -> tuple[np.ndarray, str]:
    """A mask of about `share` of the pairs, whole connected components of listings at a time."""
    n = int(max(a.max(), b.max())) + 1
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n, n))
    _, label = connected_components(graph, directed=False)
    component = label[a]
    sizes = np.bincount(component)
    if sizes.max() > 0.5 * len(a):
        return rng.random(len(a)) < share, "random pairs (one component holds most pairs)"
    order = rng.permutation(np.flatnonzero(sizes))
    taken = order[np.cumsum(sizes[order]) <= share * len(a)]
    return np.isin(component, taken), "grouped by connected listings"


def best_f1_threshold(y: np.ndarray, p: np.ndarray) -> float:
    precision, recall, thresholds = precision_recall_curve(y, p)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[np.argmax(f1[:-1])])


def scores(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    predicted = p >= threshold
    tp = (predicted & (y == 1)).sum()
    f1 = 2 * tp / max(predicted.sum() + (y == 1).sum(), 1)
    return {"ap": average_precision_score(y, p), "f1": float(f1)}


def train_mlp(x_tr, y_tr, x_va, y_va, seed: int = 0, max_epochs: int = 60, patience: int = 10):
    """A small MLP; batch size from the data size (>= ~50 steps an epoch); epoch by validation AP."""
    torch.manual_seed(seed)
    batch = int(np.clip(2 ** np.floor(np.log2(max(len(y_tr) // 50, 1))), 32, 4096))
    net = torch.nn.Sequential(
        torch.nn.Linear(x_tr.shape[1], 256), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(256, 128), torch.nn.ReLU(), torch.nn.Dropout(0.2),
        torch.nn.Linear(128, 1),
    )  # fmt: skip
    optimiser = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    xt, yt, xv = (torch.from_numpy(v) for v in (x_tr, y_tr.astype(np.float32), x_va))
    best, best_state, waited = -1.0, None, 0
    generator = torch.Generator().manual_seed(seed)
    for _ in range(max_epochs):
        net.train()
        for idx in torch.randperm(len(yt), generator=generator).split(batch):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                net(xt[idx]).squeeze(1), yt[idx]
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        net.eval()
        with torch.inference_mode():
            ap = average_precision_score(y_va, net(xv).squeeze(1).numpy())
        if ap > best:
            best, waited = ap, 0
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
        else:
            waited += 1
            if waited >= patience:
                break
    net.load_state_dict(best_state)
    net.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return torch.sigmoid(net(torch.from_numpy(x)).squeeze(1)).numpy()

    return predict, batch


def run_models(data: dict, families: tuple[str, ...], which: tuple[str, ...], seed: int) -> dict:
    """Fit the asked models on train, threshold on validation, score test; returns name -> scores."""
    columns = [feature_names().index(c) for c in feature_names(families)] if families else []
    results, val_p, test_p = {}, {}, {}
    pf = {k: data[f"pairs_{k}"][:, columns] for k in ("train", "val", "test")}
    emb = {k: data[f"emb_{k}"] for k in ("train", "val", "test")}
    y = {k: data[f"y_{k}"] for k in ("train", "val", "test")}
    settings = TreeSettings(seed=seed)
    seconds = {}
    clock = time.perf_counter()
    if "trees_pairs" in which and columns:
        trees = fit(pf["train"], y["train"], settings)
        seconds["trees_pairs"] = time.perf_counter() - clock
        val_p["trees_pairs"], test_p["trees_pairs"] = (
            trees.predict_proba(pf["val"]),
            trees.predict_proba(pf["test"]),
        )
    if "trees_all" in which or "blend" in which:
        x = {k: np.hstack([emb[k], pf[k]]) for k in emb}
        clock = time.perf_counter()
        trees = fit(x["train"], y["train"], settings)
        seconds["trees_all"] = time.perf_counter() - clock
        val_p["trees_all"], test_p["trees_all"] = (
            trees.predict_proba(x["val"]),
            trees.predict_proba(x["test"]),
        )
    if "mlp" in which or "blend" in which:
        mean, std = pf["train"].mean(0), pf["train"].std(0) + 1e-6
        x = {k: np.hstack([emb[k], (pf[k] - mean) / std]).astype(np.float32) for k in emb}
        clock = time.perf_counter()
        predict, batch = train_mlp(x["train"], y["train"], x["val"], y["val"], seed)
        seconds["mlp"] = time.perf_counter() - clock
        val_p["mlp"], test_p["mlp"] = predict(x["val"]), predict(x["test"])
        results["mlp_batch"] = batch
    if "blend" in which:
        val_p["blend"] = (val_p["trees_all"] + val_p["mlp"]) / 2
        test_p["blend"] = (test_p["trees_all"] + test_p["mlp"]) / 2
        seconds["blend"] = seconds["trees_all"] + seconds["mlp"]
    for name in val_p:
        if name not in which:
            continue
        threshold = best_f1_threshold(y["val"], val_p[name])
        results[name] = {
            "val_ap": average_precision_score(y["val"], val_p[name]),
            "fit_s": seconds[name],
            **{f"test_{k}": v for k, v in scores(y["test"], test_p[name], threshold).items()},
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, default=WDC / "data")
    parser.add_argument(
        "--test-pairs", default=str(WDC / "test.parquet"), help="'' = carve from train"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    clock = time.perf_counter()
    ids, raw, blocks = load_catalogue(args.data_dir)
    model = fit_text_model([normalise(name) for name in raw["names"]])
    listings = listing_features(model, **raw)
    listing_s = time.perf_counter() - clock

    train = pd.read_parquet(args.data_dir / "train.parquet")
    if args.test_pairs:
        test = pd.read_parquet(args.test_pairs)
    else:
        a, b = np.searchsorted(ids, train["variantid1"]), np.searchsorted(ids, train["variantid2"])
        mask, _ = grouped_split(a, b, 0.2, rng)
        train, test = train[~mask], train[mask]
    rows = {}
    for split, frame in (("train", train), ("test", test)):
        a, b = frame["variantid1"].to_numpy(), frame["variantid2"].to_numpy()
        ok = np.isin(a, ids) & np.isin(b, ids)
        rows[split] = (
            np.searchsorted(ids, a[ok]),
            np.searchsorted(ids, b[ok]),
            frame["target"].to_numpy()[ok],
        )
    a, b, y = rows["train"]
    val, how = grouped_split(a, b, 0.2, rng)
    rows["val"] = (a[val], b[val], y[val])
    rows["train"] = (a[~val], b[~val], y[~val])
    data, clock = {}, time.perf_counter()
    for split, (a, b, y) in rows.items():
        data[f"pairs_{split}"] = pair_features(listings, a, b)
        data[f"emb_{split}"] = embedding_features(blocks, a, b)
        data[f"y_{split}"] = y.astype(int)
    pair_s = time.perf_counter() - clock
    sizes = {k: len(rows[k][2]) for k in rows}
    print(f"{args.data_dir}: {len(ids)} listings, pairs {sizes}, validation {how}")
    print(f"listing features {listing_s:.1f} s, pair features {pair_s:.2f} s")

    families = tuple(FAMILIES)
    report = {
        "sizes": sizes,
        "full": run_models(data, families, ("trees_pairs", "trees_all", "mlp", "blend"), args.seed),
    }
    full = report["full"]
    # Today's kind of model, for the before/after: the MLP on the embedding interactions alone.
    full["mlp_embeddings_only"] = run_models(data, (), ("mlp",), args.seed)["mlp"]
    best = max(("trees_pairs", "trees_all", "mlp", "blend"), key=lambda m: full[m]["val_ap"])
    report["best_by_val_ap"] = best
    report["ablation"] = {
        f"-{family}": run_models(
            data, tuple(f for f in families if f != family), (best,), args.seed
        )[best]
        for family in families
    }
    print(f"MLP batch size {full['mlp_batch']}; best by validation AP: {best}")
    print(f"{'model':<22}{'val AP':>8}{'test AP':>9}{'test F1':>9}{'fit s':>8}")
    for name, r in [
        *(
            (m, full[m])
            for m in ("mlp_embeddings_only", "trees_pairs", "trees_all", "mlp", "blend")
        ),
        *((f"{best} {k}", v) for k, v in report["ablation"].items()),
    ]:
        print(
            f"{name:<22}{r['val_ap']:8.3f}{r['test_ap']:9.3f}{r['test_f1']:9.3f}{r['fit_s']:8.1f}"
        )
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
