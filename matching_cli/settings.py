"""One typed Settings for every command.

Precedence, lowest first: the defaults below (mirrored in the repository's `settings.toml`),
`./settings.toml`, a file given with `--config`, `MLFLOW_TRACKING_URI`, environment variables
`MATCHING_<SECTION>__<KEY>`, and command options.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from matching_cli.choices import BlockingMethod, FeatureFamily, Head, PairFeatures, check_device
from matching_cli.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_SETTINGS_FILE = Path("settings.toml")
_UNION_MEMBER = re.compile(r"(constrained-)?(int|float|str)|literal\[.*\]")


class _Section(BaseModel):
    # inf and nan pass `gt=0`; no setting means them, and a learning rate of inf trains NaNs.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_a_number(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic reads `epochs = true` as 1 epoch: a slip, refused for a setting that takes no
        true/false."""
        annotation = cls.model_fields[info.field_name].annotation  # type: ignore[index]
        if isinstance(value, bool) and bool not in (annotation, *get_args(annotation)):
            raise ValueError("true/false given where a value of another kind is wanted")
        return value


# numpy's and torch's generators take seeds up to 2**64 - 1, but the loop derives a seed per epoch
# (seed * 100003 + epoch), which must stay below that: 32 bits leave room.
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
# The demo data takes about 2.6 KB of files and 14 KB of memory a pair while it is written: ten
# million pairs (eight times the real catalogue's 1,168,516) is 26 GB of files already.
MAX_SYNTHETIC_PAIRS = 10_000_000


class DataSettings(_Section):
    dir: Path = Path("data")
    prepared_dir: Path = Path("prepared")
    blocks: list[str] = Field(
        default=["name_bert_64", "main_pic_embeddings_resnet_v1"], min_length=1
    )
    split: Literal["disjoint", "random"] = "disjoint"
    val_size: float = Field(default=0.1, gt=0, lt=1)
    test_size: float = Field(default=0.2, gt=0, lt=1)
    split_seed: Seed = 42
    # The pair features from the listings' own fields (see [features]). Off: embeddings only; at
    # the real size (2.3M listings) prepare then needs 2.7 GB of memory instead of 4.1-4.9 GB.
    listing_features: bool = True

    @model_validator(mode="after")
    def _room_for_training(self) -> DataSettings:
        if self.val_size + self.test_size >= 0.9:
            raise ValueError("data.val_size + data.test_size must leave at least 10% for training")
        return self


class ModelSettings(_Section):
    # `auto`: the trees or the MLP by the number of training pairs (`auto_head`).
    head: Head = Head.auto
    # The trees' only key: fit on train and validation together, the thresholds chosen on
    # out-of-fold scores (`cross_fit_choice`). The keys after it are the MLP's.
    cross_fit: bool | Literal["auto"] = "auto"
    hidden_size: int = Field(default=256, gt=0)
    num_layers: int = Field(default=3, gt=0)
    dropout: float = Field(default=0.1, ge=0, lt=1)
    pair_features: PairFeatures = PairFeatures.symmetric


# `head = "auto"`: the trees below this many training pairs, the MLP from it. Measured (README,
# "Which head"): on WDC computers the two tie on test AP and the trees' F1 is 0.03-0.05 higher; on
# demo catalogues of 3k, 8k, 100k and 300k pairs (up to 210k training pairs) the trees' test AP is
# 0.04, 0.02, 0.006 and 0.000 higher; at 1.2M (840k training pairs) the MLP's is 0.002 higher.
AUTO_TREES_BELOW = 400_000


def auto_head(
    train_pairs: int | None, device: str = "auto", mlp_options: Sequence[str] = ()
) -> tuple[Head, str]:
    """`head = "auto"` made concrete, and why. The MLP when an option only it reads was given
    (`mlp_options`, say "--epochs"), when `train.device` asks for an accelerator, or when several
    processes train (`train_pairs` None: torchrun); else the trees below AUTO_TREES_BELOW
    training pairs."""
    if mlp_options:
        return Head.mlp, f"mlp, as {', '.join(mlp_options)} (only the MLP's) was given"
    if device not in ("auto", "cpu"):
        return Head.mlp, f"mlp, as train.device is {device} (the trees fit on the CPU)"
    if train_pairs is None:
        return Head.mlp, "mlp, as torchrun started several processes (the trees fit in one)"
    if train_pairs < AUTO_TREES_BELOW:
        return Head.trees, (
            f"trees, for {train_pairs:,} training pairs (below {AUTO_TREES_BELOW:,}; "
            "--head mlp for the MLP)"
        )
    return Head.mlp, f"mlp, for {train_pairs:,} training pairs (at least {AUTO_TREES_BELOW:,})"


# `cross_fit = "auto"`: cross-fit the trees below this many train + validation pairs. There the
# validation split is small (a 3k-pair catalogue's holds ~30 matches), so the F1 threshold chosen
# on it is noisy, and it is data the trees do not learn from. Measured (README, "Checked on more
# real sets"), means over 12 splits: test F1 +0.000 to +0.023 on four real sets of 700-2,800
# labelled training pairs and two demo catalogues of 3k and 8k, AP within 0.004, the worst
# split's F1 up on four of the six. Above the cut the validation split is large enough (2,000+
# pairs) for five more fits to be worth little.
CROSS_FIT_BELOW = 20_000


def cross_fit_choice(setting: bool | Literal["auto"], pairs: int) -> tuple[bool, str]:
    """`[model] cross_fit` made concrete for `pairs` train + validation pairs, and why."""
    if setting != "auto":
        return setting, ""
    if pairs < CROSS_FIT_BELOW:
        return True, (
            f"cross_fit, for {pairs:,} train + validation pairs (below {CROSS_FIT_BELOW:,})"
        )
    return False, f"no cross_fit, for {pairs:,} train + validation pairs"


# `auto` batch size: the device's largest (a GPU needs large batches to be busy; see README,
# Performance, for the validation quality of both), unless that leaves an epoch too few optimiser
# steps: 2-8k labelled pairs at 4096 made 1-2 steps an epoch, and the model was still rising after
# 20 epochs. The `auto` learning rate follows the batch by the square-root rule that the two
# measured device defaults obey (0.003 at 4096, 0.006 at 16384).
AUTO_BATCH_MAX = {"cpu": 4096, "accelerator": 16384}
AUTO_BATCH_MIN = 64
MIN_STEPS_PER_EPOCH = 32
BASE_BATCH, BASE_LR = 4096, 3e-3


def auto_batch_size(device_type: str, train_pairs: int | None = None) -> int:
    """The device's largest batch, halved until an epoch of `train_pairs` has enough steps."""
    largest = AUTO_BATCH_MAX["cpu" if device_type == "cpu" else "accelerator"]
    if train_pairs is None:
        return largest
    fits = 1 << max(train_pairs // MIN_STEPS_PER_EPOCH, 1).bit_length() - 1
    return min(largest, max(AUTO_BATCH_MIN, fits))


def auto_lr(batch_size: int) -> float:
    return round(BASE_LR * math.sqrt(batch_size / BASE_BATCH), 6)


class TrainSettings(_Section):
    epochs: int = Field(default=20, gt=0)
    batch_size: Annotated[int, Field(gt=0)] | Literal["auto"] = "auto"
    lr: Annotated[float, Field(gt=0)] | Literal["auto"] = "auto"
    weight_decay: float = Field(default=1e-4, ge=0)
    patience: int = Field(default=5, gt=0)
    device: str = "auto"  # a free string (cuda:N), checked once here
    seed: Seed = 42
    models_dir: Path = Path("models")

    @field_validator("device")
    @classmethod
    def _device_name(cls, name: str) -> str:
        return check_device(name)

    def for_device(
        self, device_type: str, train_pairs: int | None = None, processes: int = 1
    ) -> TrainSettings:
        """A copy with `auto` batch size and learning rate made concrete for this kind of device
        and this many training pairs (None: as many as a large catalogue has). `batch_size` is
        each of `processes` processes' share: `auto` splits the whole batch among them, and the
        `auto` learning rate follows the whole batch, so N processes train as one would."""
        if self.batch_size == "auto":
            batch = max(auto_batch_size(device_type, train_pairs) // processes, 1)
        else:
            batch = self.batch_size
        lr = auto_lr(batch * processes) if self.lr == "auto" else self.lr
        return self.model_copy(update={"batch_size": batch, "lr": lr})

    def auto_choices(self, device_type: str, train_pairs: int, processes: int = 1) -> str:
        """Why `auto` values came out as they did, for the run's record ("" when none is auto)."""
        concrete = self.for_device(device_type, train_pairs, processes)
        said = []
        if self.batch_size == "auto":
            said.append(
                f"batch_size {concrete.batch_size}: the {device_type} maximum "
                f"{auto_batch_size(device_type)}, halved to leave >= {MIN_STEPS_PER_EPOCH} steps "
                f"an epoch for {train_pairs:,} training pairs (at least {AUTO_BATCH_MIN})"
            )
        if self.lr == "auto":
            said.append(f"lr {concrete.lr}: {BASE_LR} x sqrt(batch / {BASE_BATCH})")
        return "; ".join(said)


class MlflowSettings(_Section):
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str = "matching"
    # An http(s) tracking server that does not answer: each request waits this long, and is
    # tried 3 times in all (MLflow's own defaults, 120 s and 7 retries, take minutes to fail).
    timeout_s: float = Field(default=30, gt=0)


class DownloadSettings(_Section):
    public_link: str = "https://disk.yandex.ru/d/bSNKwDpGHTTvAg"
    api_url: str = "https://cloud-api.yandex.net"
    timeout_s: float = Field(default=60, gt=0)
    max_unpacked_gb: float = Field(default=50, gt=0)
    synthetic_pairs: int = Field(default=50_000, gt=0)

    @field_validator("synthetic_pairs")
    @classmethod
    def _not_too_many(cls, pairs: int) -> int:
        if pairs > MAX_SYNTHETIC_PAIRS:
            raise ValueError(
                f"at most {MAX_SYNTHETIC_PAIRS:,} demo pairs (about 26 GB of files, eight times "
                "the real catalogue); more would not fit in memory or on disk"
            )
        return pairs

    synthetic_seed: Seed = 0


class FeatureSettings(_Section):
    """Which families of pair features the model reads beside the embeddings (all are prepared,
    so switching one off needs no new `prepare`)."""

    families: list[FeatureFamily] = Field(default_factory=lambda: list(FeatureFamily))


class MatchSettings(_Section):
    k: int = Field(default=10, ge=1)
    method: BlockingMethod = BlockingMethod.auto
    # `auto` on a CPU: exact search up to the cost of a catalogue this big. Exact search computes
    # about 60M similarities per CPU-second (40 s at 50k listings); beyond, the index is cheaper.
    exact_max: int = Field(default=50_000, ge=2)
    same_category: bool = False
    # The clustering guard, chosen on the demo data (see the README): merging two groups needs a
    # near-certain edge, and no group grows past a size that one product rarely reaches. 0: off.
    join_threshold: float = Field(default=0.99, ge=0, le=1)
    max_group: int = Field(default=50, ge=0)
    # Grouping accepts the pairs scored at or above the lowest threshold with this precision on
    # validation (chosen when training, stored with the model); `--threshold` overrides it.
    group_precision: float = Field(default=0.9, gt=0, le=1)
    # Blocking also pairs listings that share a rare digit-bearing name token (a model code): one
    # in at least 2 and at most `text_token_cap` names, at most `text_per_listing` extra pairs each.
    text_blocking: bool = True
    text_token_cap: int = Field(default=20, ge=2)
    text_per_listing: int = Field(default=10, ge=1)
    # ivf: the catalogue cut into `ivf_lists` clusters (0: 4 x sqrt(listings)); each listing is
    # compared with those of the `ivf_probes` clusters nearest to it.
    ivf_lists: int = Field(default=0, ge=0)
    ivf_probes: int = Field(default=16, ge=1)
    hnsw_m: int = Field(default=16, ge=2)  # links per node; twice that at the bottom layer
    hnsw_ef_construction: int = Field(default=128, ge=1)
    hnsw_ef_search: int = Field(default=64, ge=1)
    all_pairs: bool = False
    output: Path = Path("matches")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MATCHING_", env_nested_delimiter="__", extra="forbid"
    )

    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    mlflow: MlflowSettings = MlflowSettings()
    download: DownloadSettings = DownloadSettings()
    features: FeatureSettings = FeatureSettings()
    match: MatchSettings = MatchSettings()

    @classmethod
    def from_snapshot(cls, values: dict[str, Any]) -> Settings:
        """The snapshot a run or model saved (`model_dump(mode="json")`), typed again; sections
        added since it was written take their defaults. Raises pydantic's ValidationError."""
        return cls.model_validate(values)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins. The TOML files are read in `load_settings`, where their errors can name them.
        return (init_settings, env_settings, _MlflowEnvSource(settings_cls))


class _MlflowEnvSource(PydanticBaseSettingsSource):
    """`MLFLOW_TRACKING_URI` works as MLflow users expect; `MATCHING_MLFLOW__TRACKING_URI` beats it."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        return {"mlflow": {"tracking_uri": uri}} if uri else {}


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(_without_bom(path, path.read_bytes()).decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{path}: not valid TOML ({e}); fix the file or pass another --config"
        ) from e
    except OSError as e:
        raise ConfigError(f"{path}: cannot read settings file ({e.strerror})") from e


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(
    config: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    base_file: Path = DEFAULT_SETTINGS_FILE,
) -> Settings:
    """Resolve the settings once, at the edge; `overrides` are the command options that were given."""
    _check_env(os.environ)
    files: list[tuple[Path, dict[str, Any]]] = []
    if base_file.is_file():
        files.append((base_file, read_toml(base_file)))
    if config is not None:
        if not config.is_file():
            raise ConfigError(f"--config {config}: no such file")
        files.append((config, read_toml(config)))

    file_values: dict[str, Any] = {}
    for path, values in files:
        _check_keys(path, values)
        file_values = _deep_merge(file_values, values)

    # Values from the files are the lowest layer: environment and options win over them.
    class _Loaded(Settings):
        @classmethod
        def settings_customise_sources(cls, settings_cls, **sources):  # type: ignore[override]
            return (
                *Settings.settings_customise_sources(settings_cls, **sources),
                _DictSource(settings_cls, file_values),
            )

    init = {
        section: {k: v for k, v in opts.items() if v is not None}
        for section, opts in (overrides or {}).items()
    }
    try:
        loaded = _Loaded(**{s: v for s, v in init.items() if v})
    except ValidationError as e:
        raise ConfigError(_describe(e, files, init)) from None
    return Settings.model_validate(loaded.model_dump())


class _DictSource(PydanticBaseSettingsSource):
    def __init__(self, settings_cls: type[BaseSettings], values: dict[str, Any]):
        super().__init__(settings_cls)
        self._values = values

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._values


def _check_keys(path: Path, values: dict[str, Any]) -> None:
    sections = Settings.model_fields
    for section, body in values.items():
        if section not in sections:
            raise ConfigError(f"{path}: unknown section [{section}]; known: {', '.join(sections)}")
        if not isinstance(body, dict):
            raise ConfigError(f"{path}: '{section}' must be a [{section}] table")
        known = sections[section].annotation.model_fields  # type: ignore[union-attr]
        for key in body:
            if key not in known:
                raise ConfigError(
                    f"{path}: unknown key {section}.{key}; known keys: {', '.join(known)}"
                )


def _describe(
    error: ValidationError,
    files: list[tuple[Path, dict[str, Any]]],
    options: dict[str, dict[str, Any]],
) -> str:
    # A value that fits no member of a union (`4096 | "auto"`) fails once per member: one line.
    messages: dict[str, list[str]] = {}
    values: dict[str, Any] = {}
    for item in error.errors():
        key = ".".join(str(p) for p in item["loc"] if not _UNION_MEMBER.fullmatch(str(p)))
        messages.setdefault(key, []).append(item["msg"].removeprefix("Value error, "))
        values[key] = item.get("input")
    problems, unplaced = [], False
    for key, found in messages.items():
        shown = f" (got {values[key]!r})" if not isinstance(values[key], dict) else ""
        source = _source(key, files, options)
        unplaced |= source is None
        problems.append(
            f"{key}{f' (from {source})' if source else ''}: {' or '.join(found)}{shown}"
        )
    paths = [str(path) for path, _ in files]
    where = (
        f" (from {', '.join(paths)}, MATCHING_* variables or options)" if unplaced and paths else ""
    )
    return "invalid settings" + where + ": " + "; ".join(problems)


def _source(
    key: str, files: list[tuple[Path, dict[str, Any]]], options: dict[str, dict[str, Any]]
) -> str | None:
    """Where the value of `section.key` that won came from, by precedence: a command option, a
    variable, the last file that sets it; None for a check across keys (`data`)."""
    section, _, name = key.partition(".")
    if not name:
        return None
    if name in options.get(section, {}):
        return "the command's option"
    variables = [f"MATCHING_{section}__{name}", f"MATCHING_{section}"]
    if key == "mlflow.tracking_uri":
        variables.append("MLFLOW_TRACKING_URI")
    for variable in variables:
        found = next((v for v in os.environ if v.upper() == variable.upper()), None)
        if found is not None:
            return found
    return next(
        (str(path) for path, values in reversed(files) if name in values.get(section, {})), None
    )


BOM = b"\xef\xbb\xbf"


def _without_bom(path: Path, raw: bytes) -> bytes:
    """TOML forbids a byte-order mark, but Windows editors write one: accept it, and say so."""
    if raw.startswith(BOM):
        log.warning("%s starts with a UTF-8 byte-order mark (BOM); read without the mark", path)
        return raw[len(BOM) :]
    return raw


def _check_env(environ: Mapping[str, str]) -> None:
    """`MATCHING_*` variables, before pydantic-settings reads them. One whose section is known but
    whose key is not is an error, as in a settings file (pydantic refused it without naming the
    variable); one that names no section is ignored with a warning naming it (another program's
    `MATCHING_` variable must not stop this one), a typo with the setting it was probably meant
    for. A list or a whole section must be JSON, which pydantic-settings told with a traceback."""
    sections = {f"MATCHING_{name}".upper(): name for name in Settings.model_fields}
    known = {
        f"MATCHING_{section}__{key}".upper(): (section, key)
        for section, field in Settings.model_fields.items()
        for key in field.annotation.model_fields  # type: ignore[union-attr]
    }
    for name, value in environ.items():
        upper = name.upper()
        if not upper.startswith("MATCHING_"):
            continue
        section = sections.get(upper.split("__", 1)[0]) if "__" in upper else None
        close = difflib.get_close_matches(upper, list(known), n=1, cutoff=0.8)
        if upper in known:
            _check_env_json(name, value, *known[upper])
        elif upper in sections:
            _check_env_json(name, value, sections[upper], None)
        elif section is not None:
            hint = f"did you mean {close[0]}?" if close else "unset it or fix its name"
            raise ConfigError(
                f"environment variable {name}: [{section}] has no such setting ({hint}); its "
                f"keys: {', '.join(_section_keys(section))}"
            )
        else:
            hint = (
                f"did you mean {close[0]}?"
                if close
                else f"settings are {next(iter(known))} and the like"
            )
            log.warning("environment variable %s matches no setting and is ignored; %s", name, hint)


def _section_keys(section: str) -> list[str]:
    return list(Settings.model_fields[section].annotation.model_fields)  # type: ignore[union-attr]


def _check_env_json(name: str, value: str, section: str, key: str | None) -> None:
    """A whole section, or a list setting, given in the environment is read as JSON."""
    if key is None:
        what, example = "a whole section", f"'{{\"{_section_keys(section)[0]}\": ...}}'"
    else:
        field = getattr(Settings.model_fields[section].default, key)
        if not isinstance(field, list):
            return
        what, example = "a list", f"'{json.dumps([getattr(v, 'value', v) for v in field])}'"
    try:
        json.loads(value)
    except ValueError:
        raise ConfigError(
            f"environment variable {name}={value!r}: {what} is written as JSON here, e.g. {example}"
        ) from None
