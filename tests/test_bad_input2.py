"""Bad input, round two (issue 12): no lost files, no silent wrong results, no tracebacks.

Each test names its case of the issue; each failed on the code before the fix."""

from __future__ import annotations

import csv
import io
import json
import os
import resource
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matching_cli.data.prepare import stores
from matching_cli.settings import load_settings
from tests.conftest import invoke, store

DATA = Path("data")


def _one_line_error(result, *expected: str) -> None:
    assert result.exit_code == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr  # one line, after any log lines
    text = " ".join(result.stderr.split())
    for part in expected:
        assert part in text, result.stderr


def _folder(path: Path) -> dict[str, bytes]:
    """Every file under `path` (relative name -> bytes)."""
    return {
        str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()
    }


# 1. download never replaces files it did not write, unless --force, which names them.


def test_download_keeps_a_users_files_without_force(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("x")
    pq.write_table(pa.table({"a": [1]}), d / "some.parquet")
    before = _folder(d)
    result = invoke("download", "--synthetic", "--pairs", "100", "--data-dir", "d")
    _one_line_error(result, "notes.txt", "--force")
    assert _folder(d) == before
    forced = invoke("download", "--synthetic", "--pairs", "100", "--data-dir", "d", "--force")
    assert forced.exit_code == 0, forced.stderr
    assert "replaced 2 files" in forced.stderr and "notes.txt" in forced.stderr
    assert "train.parquet" in _folder(d) and "notes.txt" not in _folder(d)


def test_download_does_not_silently_replace_a_partial_catalogue(tmp_path, monkeypatch, demo_data):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d").mkdir()
    for name in ("train.parquet", "text_and_bert.parquet"):
        (tmp_path / "d" / name).write_bytes((demo_data / name).read_bytes())
    before = _folder(tmp_path / "d")
    result = invoke("download", "--synthetic", "--pairs", "100", "--data-dir", "d")
    _one_line_error(result, "holds 2 files", "train.parquet")
    assert _folder(tmp_path / "d") == before


# 2. predict -o: a new file gets the usual mode; a link is written through; a special file is
# written into, its node kept; a folder is a one-line error; `-` is standard output.


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_predict_output_gets_the_usual_mode_or_keeps_the_old_one(in_trained, tmp_path, umask_022):
    new = tmp_path / "new.csv"
    assert invoke("predict", "data/test.parquet", "-o", str(new)).exit_code == 0
    assert stat.S_IMODE(new.stat().st_mode) == 0o644
    new.chmod(0o640)
    again = invoke("predict", "data/test.parquet", "-o", str(new))
    assert again.exit_code == 0, again.stderr
    assert stat.S_IMODE(new.stat().st_mode) == 0o640


def test_predict_writes_through_a_symlink(in_trained, tmp_path):
    target, link = tmp_path / "target.csv", tmp_path / "link.csv"
    link.symlink_to(target.name)
    assert invoke("predict", "data/test.parquet", "-o", str(link)).exit_code == 0
    assert link.is_symlink() and target.read_text().startswith("variantid1,")


def test_predict_writes_into_a_pipe_and_leaves_the_node(in_trained, tmp_path):
    fifo = tmp_path / "scores.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke("predict", "data/test.parquet", "-o", str(fifo))
    reader.join(timeout=30)
    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    assert received and received[0].startswith(b"variantid1,")


def test_predict_into_a_folder_is_one_line(in_trained, tmp_path):
    _one_line_error(invoke("predict", "data/test.parquet", "-o", str(tmp_path)), "is a folder")


def test_predict_to_stdout_with_a_dash(in_trained):
    result = invoke("predict", "data/test.parquet", "-o", "-")
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["variantid1", "variantid2", "score"] and len(rows) > 1
    assert "Wrote" in result.stderr and not Path("-").exists()


# 3. match -o: a failing later stage leaves the old results whole.


def test_match_leaves_the_old_folder_whole_when_a_later_stage_fails(project, trained):
    run_id = trained[1]
    out = project / "results" / "out"  # a folder whose parent does not exist yet
    assert invoke("match", "--run-id", run_id, "-o", str(out), "-k", "5").exit_code == 0
    before = _folder(out)
    assert set(before) == {"pairs.parquet", "clusters.parquet", "summary.json"}
    (project / "data" / "truth.parquet").write_bytes(b"not parquet at all")
    result = invoke("match", "--run-id", run_id, "-o", str(out), "-k", "3")
    _one_line_error(result, "truth.parquet")
    assert _folder(out) == before
    assert [p.name for p in out.parent.iterdir()] == ["out"]  # no staging folder left


def test_match_refuses_a_folder_holding_other_files(project, trained):
    (project / "out").mkdir()
    (project / "out" / "notes.txt").write_text("mine")
    result = invoke("match", "--run-id", trained[1], "-o", "out", "-k", "3")
    _one_line_error(result, "notes.txt", "did not write")
    assert _folder(project / "out") == {"notes.txt": b"mine"}


# 5. --on-missing zero gives a score of 0 to pairs with an unknown listing.


def test_on_missing_zero_scores_unknown_pairs_zero(in_trained, tmp_path):
    known = pq.read_table("data/test.parquet").slice(0, 1).to_pydict()
    pairs = tmp_path / "pairs.parquet"
    v1 = [1, known["variantid1"][0], known["variantid1"][0]]
    v2 = [2, 3, known["variantid2"][0]]
    pq.write_table(pa.table({"variantid1": v1, "variantid2": v2}), pairs)
    out = tmp_path / "scores.csv"
    result = invoke("predict", str(pairs), "-o", str(out), "--on-missing", "zero")
    assert result.exit_code == 0, result.stderr
    scores = [float(r["score"]) for r in csv.DictReader(out.open())]
    assert scores[:2] == [0.0, 0.0] and scores[2] > 0


# 7. Labels that contradict themselves: counted, dropped with a warning, refused when too many.


def _add_pairs(rows: list[tuple[int, int, int]]) -> None:
    table = pq.read_table(DATA / "train.parquet")
    extra = {
        "variantid1": [r[0] for r in rows],
        "variantid2": [r[1] for r in rows],
        "target": [r[2] for r in rows],
    }
    extra_table = pa.table(
        {name: pa.array(extra[name], table.schema.field(name).type) for name in extra}
    )
    table = table.select(list(extra))
    pq.write_table(pa.concat_tables([table, extra_table]), DATA / "train.parquet")


def test_prepare_drops_self_pairs_repeats_and_contradictions(project):
    t = pq.read_table(DATA / "train.parquet").to_pydict()
    a, b, y = t["variantid1"], t["variantid2"], t["target"]
    _add_pairs([(a[0], a[0], 1), (a[1], b[1], y[1]), (b[2], a[2], 1 - y[2])])
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stderr.split()) + " ".join(result.stdout.split())
    for said in ("1 pairs of a listing with itself", "1 repeats", "2 pairs labelled both"):
        assert said in text, text
    manifest = json.loads((store() / "manifest.json").read_text())
    assert manifest["pairs_left_out"] == {"self_pairs": 1, "repeated": 1, "contradicting": 2}
    assert manifest["counts"]["pairs"] == len(a) - 1  # the contradicted pair is gone


def test_prepare_refuses_labels_contradicting_each_other_wholesale(project):
    t = pq.read_table(DATA / "train.parquet").to_pydict()
    flipped = [
        (b, a, 1 - y) for a, b, y in zip(t["variantid1"], t["variantid2"], t["target"], strict=True)
    ]
    _add_pairs(flipped[: len(flipped) // 5])
    _one_line_error(invoke("prepare"), "labelled both 1 and 0", "fix the labels")
    assert not Path("prepared").exists()


# 10. No room on the disk: a clear error, the old file intact, no temporary left.


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
    # Room for the model's files (85 kB), not for the 3 MB of scores.
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))


def _fails_for_room(env: dict[str, str], *args: str) -> None:
    """`matching ARGS` in a process that may write no file past 1 MB: one clean error."""
    result = subprocess.run(
        [sys.executable, "-m", "matching_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        preexec_fn=_limit_file_size,
        timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert "no room to write it" in result.stderr and "Traceback" not in result.stderr


def test_predict_with_no_room_keeps_the_old_file(in_trained, tmp_path):
    out, pairs = tmp_path / "scores.csv", tmp_path / "pairs.parquet"
    out.write_text("old scores\n")
    test_pairs = pq.read_table("data/test.parquet", columns=["variantid1", "variantid2"])
    pq.write_table(pa.concat_tables([test_pairs] * (100_000 // test_pairs.num_rows + 1)), pairs)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    _fails_for_room(env, "predict", str(pairs), "-o", str(out))
    assert out.read_text() == "old scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.parquet", "scores.csv"]


# 11. Damaged inside, or a value that breaks a parser: an error naming the file.


def _damage_first_page(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[4:36] = b"\xff" * 32  # the first page header, right after the magic bytes
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["train.parquet", "text_and_bert.parquet"])
def test_prepare_names_a_file_damaged_inside(project, name):
    _damage_first_page(DATA / name)
    _one_line_error(invoke("prepare"), name, "damaged inside")


def test_predict_names_a_pairs_file_damaged_inside(in_trained, tmp_path):
    pairs = tmp_path / "pairs.parquet"
    pq.write_table(pq.read_table("data/test.parquet"), pairs)
    _damage_first_page(pairs)
    _one_line_error(invoke("predict", str(pairs), "-o", str(tmp_path / "s.csv")), "damaged inside")
    assert not (tmp_path / "s.csv").exists()


def test_prepare_survives_categories_that_break_the_json_parser(project):
    table = pq.read_table(DATA / "attributes.parquet")
    values = table.column("categories").to_pylist()
    values[0] = "[" * 100_000  # deeper than the parser's recursion limit
    values[1] = "{not json"
    index = table.schema.get_field_index("categories")
    pq.write_table(
        table.set_column(index, "categories", pa.array(values)), DATA / "attributes.parquet"
    )
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    assert "attributes.parquet: 2 distinct 'categories' values are not JSON" in " ".join(
        result.stderr.split()
    )


def test_prepare_tells_of_attributes_it_cannot_read_and_listings_without_a_row(project):
    """Attribute texts that are no JSON object, and listings that the attributes file has no row
    for, are counted on stderr (the features worker's log reaches the command's); their pairs get
    the attributes' "missing" flag."""
    from matching_cli.data.prepare import load_prepared

    table = pq.read_table(DATA / "attributes.parquet")
    ids = table.column("variantid").to_pylist()
    pairs = pq.read_table(DATA / "train.parquet").to_pylist()
    first, second = next(
        (p["variantid1"], p["variantid2"])
        for p in pairs
        if ids[0] not in p.values() and p["variantid1"] != p["variantid2"]
    )
    values = table.column("characteristic_attributes_mapping").to_pylist()
    values[ids.index(first)] = "{not json"
    values[ids.index(second)] = "[1, 2]"  # JSON, but no object
    index = table.schema.get_field_index("characteristic_attributes_mapping")
    table = table.set_column(index, "characteristic_attributes_mapping", pa.array(values))
    pq.write_table(table.slice(1), DATA / "attributes.parquet")  # listing ids[0] loses its row
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    told = " ".join(result.stderr.split())
    assert (
        "attributes.parquet: 2 'characteristic_attributes_mapping' values are not JSON objects "
        "(e.g. '{not json'); those listings count as having no attributes" in told
    ), told
    assert "attributes.parquet has no row for 1 of the " in told, told
    prepared = load_prepared(store())
    position = {int(v): i for i, v in enumerate(prepared.items.ids)}
    at = prepared.feature_names.index("attr_missing")
    flags = []
    for split in prepared.splits.values():
        for a, b in ((first, second), (second, first)):
            rows = (split.left == position[a]) & (split.right == position[b])
            flags += split.features[rows, at].tolist()
    assert flags == [1.0]


def _all_null(name: str, column: str) -> None:
    """`column` of `name` rewritten as pandas writes a column of None alone: Arrow type null."""
    table = pq.read_table(DATA / name)
    index = table.schema.get_field_index(column)
    pq.write_table(table.set_column(index, column, pa.nulls(table.num_rows)), DATA / name)


def test_columns_of_nulls_alone_are_fields_without_values(project):
    """A text column or the extra pictures' column holding nothing at all (typed null, not
    string) is read as values absent, their features marked missing; a column of the wrong type
    is still a one-line error."""
    from matching_cli.data.prepare import load_prepared

    _all_null("attributes.parquet", "categories")
    _all_null("text_and_bert.parquet", "description")
    _all_null("images_embed.parquet", "pic_embeddings_resnet_v1")
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    prepared = load_prepared(store())
    features = prepared.splits["train"].features
    for flag in ("cat_missing", "desc_missing"):
        assert (features[:, prepared.feature_names.index(flag)] == 1).all(), flag
    assert (prepared.item_category == -1).all() and prepared.category_names == []
    # No extra pictures: each listing has its main picture at most.
    assert (prepared.listings().picture_spans[:, 1] <= 1).all()
    table = pq.read_table(DATA / "images_embed.parquet")
    index = table.schema.get_field_index("pic_embeddings_resnet_v1")
    strings = pa.array(["x"] * table.num_rows)
    table = table.set_column(index, "pic_embeddings_resnet_v1", strings)
    pq.write_table(table, DATA / "images_embed.parquet")
    _one_line_error(
        invoke("prepare"),
        "images_embed.parquet: column 'pic_embeddings_resnet_v1' should be list<double> or "
        "list<list<double>>, found string",
    )


def test_an_attributes_file_without_categories_is_a_catalogue_without_them(project):
    """The per-category metric is skipped and the categories' features marked missing; the
    attributes still count."""
    from matching_cli.data.prepare import load_prepared

    table = pq.read_table(DATA / "attributes.parquet")
    pq.write_table(table.drop_columns(["categories"]), DATA / "attributes.parquet")
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    prepared = load_prepared(store())
    features = prepared.splits["train"].features
    assert (features[:, prepared.feature_names.index("cat_missing")] == 1).all()
    assert (features[:, prepared.feature_names.index("attr_missing")] == 0).any()
    assert (prepared.item_category == -1).all() and prepared.category_names == []


def test_boolean_labels_are_read_as_0_and_1(project, monkeypatch):
    import numpy as np

    assert invoke("prepare").exit_code == 0
    with np.load(store() / "pairs.npz") as z:
        numbers = z["target"]
    table = pq.read_table(DATA / "train.parquet")
    index = table.schema.get_field_index("target")
    table = table.set_column(index, "target", table.column("target").cast(pa.bool_()))
    pq.write_table(table, DATA / "train.parquet")
    monkeypatch.setenv("MATCHING_DATA__PREPARED_DIR", "booleans")
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    (booleans,) = stores(Path("booleans"))
    with np.load(booleans / "pairs.npz") as z:
        np.testing.assert_array_equal(z["target"], numbers)


# 12. predict names a folder or a link loop, and reads a CSV pairs file.


def test_predict_names_a_folder_and_a_link_loop(in_trained, tmp_path):
    out = str(tmp_path / "s.csv")
    _one_line_error(invoke("predict", str(tmp_path), "-o", out), "is a folder")
    loop = tmp_path / "loop.parquet"
    loop.symlink_to(loop.name)
    _one_line_error(invoke("predict", str(loop), "-o", out), "symlink loop")


def test_predict_reads_a_csv_pairs_file(in_trained, tmp_path):
    pairs = pq.read_table("data/test.parquet").to_pydict()
    source = tmp_path / "pairs.csv"
    lines = ["variantid1,variantid2"]
    lines += [f"{a},{b}" for a, b in zip(pairs["variantid1"], pairs["variantid2"], strict=True)]
    source.write_text("\n".join(lines) + "\n")
    from_csv, from_parquet = tmp_path / "a.csv", tmp_path / "b.csv"
    assert invoke("predict", str(source), "-o", str(from_csv)).exit_code == 0
    assert invoke("predict", "data/test.parquet", "-o", str(from_parquet)).exit_code == 0
    assert from_csv.read_text() == from_parquet.read_text()
    # Names and values quoted (R's write.csv, pandas' QUOTE_ALL); a space after each comma.
    pairs_of = list(zip(pairs["variantid1"], pairs["variantid2"], strict=True))
    for header, row in (
        ('"variantid1","variantid2"', '"{}","{}"'),
        ("variantid1, variantid2", "{}, {}"),
    ):
        source.write_text("\n".join([header, *(row.format(a, b) for a, b in pairs_of)]) + "\n")
        assert invoke("predict", str(source), "-o", str(from_csv)).exit_code == 0, header
        assert from_csv.read_text() == from_parquet.read_text()
    source.write_text("a,b\n1,2\n")
    _one_line_error(invoke("predict", str(source), "-o", str(from_csv)), "variantid1")
    source.write_text("variantid1,variantid2\n1,x\n")
    _one_line_error(
        invoke("predict", str(source), "-o", str(from_csv)),
        "not a readable CSV of variantid1, variantid2",
    )


# 13. A BOM in settings.toml is accepted, and said; a MATCHING_* variable that names no setting is
# named.


def test_settings_with_a_bom_are_read_and_the_bom_named(project):
    Path("settings.toml").write_bytes(b"\xef\xbb\xbf[data]\nsplit_seed = 3\n")
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    assert "byte-order mark" in result.stderr


@pytest.mark.parametrize("name", ["MATCHING_TRAINN__EPOCHS", "MATCHING_TRAIN_EPOCHS"])
def test_an_unknown_matching_variable_is_named(project, monkeypatch, name):
    monkeypatch.setenv(name, "3")
    result = invoke("prepare")
    assert result.exit_code == 0, result.stderr
    text = " ".join(result.stderr.split())
    assert f"{name} matches no setting" in text and "MATCHING_TRAIN__EPOCHS" in text


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        # A known section's unknown key: refused as in a settings file, with no "ignored" warning.
        (
            "MATCHING_TRAIN__EPOCH",
            "3",
            "[train] has no such setting (did you mean MATCHING_TRAIN__EPOCHS?)",
        ),
        # Lists and whole sections are JSON there: pydantic-settings told it with a traceback.
        (
            "MATCHING_FEATURES__FAMILIES",
            "text,digits",
            'a list is written as JSON here, e.g. \'["text", ',
        ),
        ("MATCHING_DATA__BLOCKS", "name_bert_64", "a list is written as JSON"),
        ("MATCHING_TRAIN", "epochs=3", "a whole section is written as JSON"),
    ],
)
def test_a_matching_variable_pydantic_cannot_read_is_one_line(
    project, monkeypatch, name, value, expected
):
    monkeypatch.setenv(name, value)
    result = invoke("prepare")
    _one_line_error(result, f"environment variable {name}", expected)
    assert "ignored" not in result.stderr


def test_lists_and_sections_in_the_environment_are_read_as_json(project, monkeypatch):
    monkeypatch.setenv("MATCHING_FEATURES__FAMILIES", '["text", "digits"]')
    monkeypatch.setenv("MATCHING_TRAIN", '{"epochs": 3}')
    settings = load_settings()
    assert [f.value for f in settings.features.families] == ["text", "digits"]
    assert settings.train.epochs == 3


# Siblings found on the way.


def test_prepare_will_not_replace_the_data_folder(project, monkeypatch):
    """Case 1's sibling: `data.prepared_dir` pointed at the raw data must not delete it."""
    before = _folder(project / "data")
    monkeypatch.setenv("MATCHING_DATA__PREPARED_DIR", "data")
    _one_line_error(invoke("prepare"), "data.prepared_dir data", "did not write")
    assert _folder(project / "data") == before


def test_match_names_a_listings_folder(project, trained):
    """Case 12's sibling: `--listings` given a folder."""
    (project / "listings").mkdir()
    result = invoke("match", "--run-id", trained[1], "--listings", "listings", "-o", "out")
    _one_line_error(result, "--listings listings: is a folder")


def test_prepare_with_no_room_keeps_the_old_prepared_folder(project):
    """Case 10's sibling: a folder replaced as a whole (the item matrix is 1.8 MB here)."""
    assert invoke("prepare").exit_code == 0
    before = _folder(project / "prepared")
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).parents[1]),
        # Other data settings: a store of its own, prepared from the raw files (one that differs
        # only in its split would share the first one's files and write little).
        "MATCHING_DATA__LISTING_FEATURES": "false",
    }
    _fails_for_room(env, "prepare")
    assert _folder(project / "prepared") == before
    assert [p.name for p in (project / "prepared").iterdir() if p.name.startswith(".")] == []


def test_a_report_dir_that_is_a_file_is_refused_before_training(project):
    """Case 2's sibling: `--report-dir` naming a file failed with a traceback after training."""
    Path("report").write_text("mine")
    result = invoke("train", "--epochs", "1", "--report-dir", "report")
    assert result.exit_code == 2 and "is a file" in " ".join(result.stderr.split())
    assert Path("report").read_text() == "mine" and not Path("prepared").exists()


def test_a_prepared_folder_behind_a_symlink_stays_behind_it(project, monkeypatch, tmp_path_factory):
    """Case 2's sibling for folders: `prepared -> elsewhere` (a larger disk) keeps its link."""
    elsewhere = tmp_path_factory.mktemp("scratch") / "prepared"
    elsewhere.mkdir()
    Path("prepared").symlink_to(elsewhere)
    assert invoke("prepare").exit_code == 0
    assert Path("prepared").is_symlink() and stores(elsewhere)


def test_settings_that_are_not_utf8_are_named(project):
    """Case 13's sibling: a settings file saved as Latin-1."""
    Path("settings.toml").write_bytes("[mlflow]\nexperiment = 'caf\xe9'\n".encode("latin-1"))
    _one_line_error(invoke("prepare"), "settings.toml: not UTF-8 text")


@pytest.mark.parametrize("into", ["pipe", "file"])
def test_predict_to_the_process_own_stdout_writes_through(in_trained, tmp_path, into):
    """`-o /dev/stdout` (tested as /proc/self/fd/1: the same link, and safe to try on old code,
    which replaced the node) writes into standard output, a pipe or a redirected file, and the
    summary goes to stderr rather than over the scores."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [sys.executable, "-m", "matching_cli", "predict", "data/test.parquet"]
    sink = tmp_path / "out.csv"
    with sink.open("wb") as f:
        result = subprocess.run(
            [*command, "-o", "/proc/self/fd/1"],
            stdout=subprocess.PIPE if into == "pipe" else f,
            stderr=subprocess.PIPE,
            env=env,
            timeout=120,
        )
    assert result.returncode == 0, result.stderr.decode()
    written = result.stdout if into == "pipe" else sink.read_bytes()
    lines = written.decode().splitlines()
    assert lines[0] == "variantid1,variantid2,score" and len(lines) > 1
    assert all(line.count(",") == 2 for line in lines)
    assert b"Wrote" in result.stderr
