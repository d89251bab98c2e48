"""The raw data folder: the competition's file names, in one order, and when the data is there."""

from __future__ import annotations

from pathlib import Path

PAIRS_FILE = "train.parquet"  # labelled pairs
TEST_FILE = "test.parquet"  # the competition's unlabelled pairs; no command needs it
TEXT_FILE = "text_and_bert.parquet"
ATTRIBUTES_FILE = "attributes.parquet"  # categories; without it the per-category metric is skipped
# The image table goes by either name: the competition's first, then the original project's.
IMAGE_FILES = ("resnet.parquet", "images_embed.parquet")
TRUTH_FILE = "truth.parquet"  # each listing's product: only the demo data set has one

# What competition.zip holds, besides one image table.
ARCHIVE_FILES = (PAIRS_FILE, TEST_FILE, TEXT_FILE, ATTRIBUTES_FILE)
# What the commands cannot do without. A catalogue may lack an image table (`data.blocks` then
# names no picture column); the competition's has one, which `download` fetches.
REQUIRED_FILES = (PAIRS_FILE, TEXT_FILE)


def missing_required(data_dir: Path) -> list[str]:
    """The REQUIRED_FILES that `data_dir` lacks, in order: what no command can do without."""
    return [name for name in REQUIRED_FILES if not (data_dir / name).is_file()]


def missing_files(data_dir: Path) -> list[str]:
    """The competition's files that `data_dir` lacks (the required ones and an image table), in the
    order above; [] when the data is present: what `download` fetches unless forced."""
    missing = missing_required(data_dir)
    if not any((data_dir / name).is_file() for name in IMAGE_FILES):
        missing.append(" or ".join(IMAGE_FILES))
    return missing


def data_present(data_dir: Path) -> bool:
    return not missing_files(data_dir)


def is_demo(data_dir: Path) -> bool:
    """The demo data set (`matching download --synthetic`) is the one that knows its products."""
    return (data_dir / TRUTH_FILE).is_file()
