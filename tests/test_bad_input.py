"""Bad inputs, table-driven: each gets one line naming the problem, a non-zero exit, no traceback, and
leaves every store it was pointed at byte-identical.

A row is ``Row(name, args, expect, store=...)``: ``args`` may use ``{model}``, ``{files}`` (the bad files
made below), ``{pairs}`` (a good dataset) and ``{store}`` (this row's own copy of the store named by
``store``: a good one, a newer format, not a store…). Add a row for a new command or a new mistake; the
runner does the rest. Rows run two at a time through the command's own ``main()``, each in a fresh process
forked from one that has imported the library once (tests/forked_cli.py).
Run with ``-s`` to see the figures."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from forked_cli import ForkedCli

import actstore


@dataclass(frozen=True)
class Row:
    name: str
    args: tuple[str, ...]
    expect: str  # a regex the error line must match
    store: str | None = "good"  # which store {store} is a copy of (None: no store involved)
    env: dict = field(default_factory=dict)


E = ("extract", "--model", "{model}", "--dataset", "{pairs}", "--store", "{store}", "--quiet")
V999 = r"store format 999, newer than the format 1"

ROWS = [
    # --- extract: options -------------------------------------------------------------------------
    Row("limit negative", (*E, "--limit", "-1"), r"--limit must be at least 1, got -1"),
    Row("limit zero", (*E, "--limit", "0"), r"--limit must be at least 1, got 0"),
    Row("limit not a number", (*E, "--limit", "ten"), r"Invalid value for '--limit'.*'ten' is not a valid integer"),
    Row("dtype unknown", (*E, "--dtype", "float16"), r"Invalid value for '--dtype'.*'float16' is not one of"),
    Row("compression unknown", (*E, "--compression", "lzma"),
        r"unknown compression 'lzma'; choose one of none, zstd, blosc-zstd, blosc-lz4$"),
    Row("compression with intervene", (*E, "--intervene", "good-bad", "--coefficients", "1", "--compression", "zstd"),
        r"--compression applies to extraction's hidden; --intervene records uncompressed"),
    Row("batch size zero", (*E, "--batch-size", "0"), r"--batch-size must be at least 1 or 'auto', got 0"),
    Row("batch size negative", (*E, "--batch-size", "-4"), r"--batch-size must be at least 1 or 'auto', got -4"),
    Row("chunk tokens zero", (*E, "--chunk-tokens", "0"), r"--chunk-tokens must be at least 1, got 0"),
    Row("suffix without =", (*E, "--suffix", "zh"), r"--suffix.*expected VARIANT=TEXT, got 'zh'"),
    Row("suffix for unknown variant", (*E, "--suffix", "xx=!"), r"suffix given for unknown variant 'xx'"),
    Row("variants empty list", (*E, "--variants", ","), r"--variants.*expected a comma-separated list"),
    Row("variant unknown", (*E, "--variants", "en,tlh"), r"dataset 'pairs' has no variant 'tlh'; it has en, zh, fr"),
    Row("unknown option", (*E, "--frobnicate"), r"No such option '--frobnicate'"),
    Row("layer out of range", (*E, "--layers", "0,9"), r"layer 9 is out of range: .* has layers 0\.\.3"),
    Row("layer range out of range", (*E, "--layers", "2:9"), r"--layers 2:9 reaches layer 8, out of range"),
    Row("layers not numbers", (*E, "--layers", "first,2"), r"--layers must be all, a comma-separated list"),
    Row("layers empty range", (*E, "--layers", "2:2"), r"--layers 2:2 selects no layer"),
    Row("positions unknown", (*E, "--positions", "first"), r"--positions must be all, last or mean, got 'first'"),
    Row("positions with intervene", (*E, "--intervene", "good-bad", "--coefficients", "1", "--positions", "last"),
        r"--layers/--positions choose what extraction stores; with --intervene use --record-layers and --steer-positions"),
    Row("positions of a stored full run changed", (*E, "--positions", "last"),
        r"already holds .*/pairs made with a different configuration \(positions differ\); pass --overwrite"),
    # --- extract: datasets and files ------------------------------------------------------------------
    Row("dataset unknown name", ("extract", "--dataset", "nosuchset", "--store", "{store}"),
        r"unknown dataset 'nosuchset'; built in: django-ui, arithmetic"),
    Row("builtin variant unknown", ("extract", "--dataset", "arithmetic", "--variants", "roman", "--store", "{store}"),
        r"dataset 'arithmetic' has no variant 'roman'; it has digits, words"),
    Row("code path missing", ("extract", "--dataset", "code:{files}/nothere", "--store", "{store}"),
        r"code path not found: .*nothere"),
    Row("code file not python", ("extract", "--dataset", "code:{files}/broken.py", "--store", "{store}"),
        r"broken\.py:1: not valid Python"),
    Row("dataset file missing", ("extract", "--dataset", "{files}/missing.jsonl", "--store", "{store}"),
        r"dataset file not found: .*missing\.jsonl"),
    Row("jsonl malformed line", ("extract", "--dataset", "{files}/bad.jsonl", "--store", "{store}"),
        r"bad\.jsonl:3: not valid JSON"),
    Row("jsonl line not an object", ("extract", "--dataset", "{files}/notobj.jsonl", "--store", "{store}"),
        r"notobj\.jsonl:2: expected an object"),
    Row("jsonl empty", ("extract", "--dataset", "{files}/empty.jsonl", "--store", "{store}"),
        r"dataset 'empty' has no examples"),
    Row("jsonl not utf-8", ("extract", "--dataset", "{files}/latin1.jsonl", "--store", "{store}"),
        r"latin1\.jsonl:2: not UTF-8 text"),
    Row("jsonl duplicate id", ("extract", "--dataset", "{files}/dupid.jsonl", "--store", "{store}"),
        r"dupid\.jsonl:2: duplicate id 'a'"),
    Row("jsonl value not text", ("extract", "--dataset", "{files}/number.jsonl", "--store", "{store}"),
        r"number\.jsonl:1: value of 'en' is not a string"),
    Row("csv header empty column", ("extract", "--dataset", "{files}/emptycol.csv", "--store", "{store}"),
        r"emptycol\.csv:1: header has an empty column name \(column 2\)"),
    Row("csv header duplicate column", ("extract", "--dataset", "{files}/dupcol.csv", "--store", "{store}"),
        r"dupcol\.csv:1: header names column 'en' twice"),
    Row("csv without header", ("extract", "--dataset", "{files}/noheader.csv", "--store", "{store}"),
        r"noheader\.csv: no header row"),
    Row("csv header only", ("extract", "--dataset", "{files}/headeronly.csv", "--store", "{store}"),
        r"dataset 'headeronly' has no examples"),
    Row("csv row too long", ("extract", "--dataset", "{files}/toolong.csv", "--store", "{store}"),
        r"toolong\.csv:3: more fields than the header has"),
    Row("dataset file of unknown type", ("extract", "--dataset", "{files}/data.txt", "--store", "{store}"),
        r"unknown dataset file type '\.txt'"),
    Row("dataset name too long for a path", ("extract", "--model", "{model}", "--dataset", "{files}/" + "数" * 80 + ".jsonl",
                                             "--store", "{store}"), r"is too long for a store path"),
    # --- extract: models ---------------------------------------------------------------------------
    Row("model unknown name", ("extract", "--model", "nosuchmodel", "--dataset", "{pairs}", "--store", "{store}"),
        r"unknown model 'nosuchmodel'; known names: gemma3-270m, smollm2-135m, qwen2\.5-coder-0\.5b, llama3"),
    Row("model gguf missing", ("extract", "--model", "{files}/missing.gguf", "--dataset", "{pairs}", "--store", "{store}"),
        r"GGUF file not found: .*missing\.gguf"),
    Row("model gguf not gguf", ("extract", "--model", "{files}/notgguf.gguf", "--dataset", "{pairs}", "--store", "{store}"),
        r"notgguf\.gguf is not a GGUF file \(bad magic bytes\)"),
    Row("model gguf truncated", ("extract", "--model", "{files}/truncated.gguf", "--dataset", "{pairs}", "--store", "{store}"),
        r"cannot load GGUF .*truncated\.gguf"),
    Row("model only pickled weights", ("extract", "--model", "{files}/pickled", "--dataset", "{pairs}", "--store", "{store}"),
        r"pickled holds no \.safetensors weights \(pickled weights are never loaded\)"),
    Row("model empty directory", ("extract", "--model", "{files}/emptydir", "--dataset", "{pairs}", "--store", "{store}"),
        r"emptydir holds no \.safetensors weights"),
    Row("model hub id offline", ("extract", "--model", "nosuch-org/nosuch-model", "--dataset", "{pairs}", "--store", "{store}"),
        r"model 'nosuch-org/nosuch-model' \(nosuch-org/nosuch-model\) is not available offline", env={"HF_HUB_OFFLINE": "1"}),
    # --- extract: stores and URLs ------------------------------------------------------------------
    Row("store url unknown scheme", ("extract", "--model", "{model}", "--dataset", "{pairs}", "--store", "foo://bucket/acts.zarr"),
        r"unknown URL scheme 'foo://'", store=None),
    Row("store under a file", ("extract", "--model", "{model}", "--dataset", "{pairs}", "--store", "{files}/plainfile/acts.zarr"),
        r"cannot write the store at .*plainfile.* is not a writable directory", store=None),
    Row("store path empty", ("extract", "--model", "{model}", "--dataset", "{pairs}", "--store", ""), r"empty --store", store=None),
    Row("store dir not a store", E, r"exists and is not an actstore store; choose a new or empty directory", store="notstore"),
    Row("store newer format", E, V999, store="v999"),
    Row("store plain zarr", E, r"is not an actstore store \(no 'actstore_format' attribute\)", store="plainzarr"),
    Row("store root metadata corrupt", E, r"cannot read the store metadata", store="corrupt"),
    Row("group of another config", (*E, "--dtype", "float32"),
        r"already holds .*/pairs made with a different configuration \(.*dtype.*\); pass --overwrite"),
    # --- ls / info / verify --------------------------------------------------------------------------
    Row("ls missing store", ("ls", "{files}/nothere.zarr"), r"no actstore store at .*nothere\.zarr", store=None),
    Row("ls not a store", ("ls", "{store}"), r"no actstore store at", store="notstore"),
    Row("ls newer format", ("ls", "{store}"), V999, store="v999"),
    Row("ls plain zarr", ("ls", "{store}"), r"is not an actstore store", store="plainzarr"),
    Row("ls unknown scheme", ("ls", "foo://bucket/acts.zarr"), r"unknown URL scheme 'foo://'", store=None),
    Row("ls root metadata corrupt", ("ls", "{store}"), r"cannot read the store metadata", store="corrupt"),
    Row("info unknown run", ("info", "{store}", "--model", "nope", "--dataset", "pairs"), r"model 'nope' / dataset 'pairs' is not in"),
    Row("info without --model", ("info", "{store}", "--dataset", "pairs"), r"Missing option '--model'"),
    Row("info newer format", ("info", "{store}", "--model", "m", "--dataset", "d"), V999, store="v999"),
    Row("verify newer format", ("verify", "{store}"), V999, store="v999"),
    Row("verify missing store", ("verify", "{files}/nothere.zarr"), r"no actstore store at", store=None),
    Row("verify unknown model", ("verify", "{store}", "--model", "nope"), r"model 'nope' is not in"),
    Row("verify unknown dataset", ("verify", "{store}", "--dataset", "nope"), r"dataset 'nope' is not in"),
    Row("verify root metadata corrupt", ("verify", "{store}"), r"cannot read the store metadata", store="corrupt"),
    Row("verify run metadata corrupt", ("verify", "{store}"), r"1 bad or missing", store="runcorrupt"),
    Row("unknown command", ("frobnicate",), r"No such command 'frobnicate'", store=None),
    # --- analyze / push / pull (commands written alongside; add rows as they grow) ----------------------
    Row("analyze unknown run", ("analyze", "similarity", "--store", "{store}", "--model", "nope", "--dataset", "pairs",
                                "--out", "{files}/out"), r"model 'nope' / dataset 'pairs' is not in"),
    Row("analyze newer format", ("analyze", "similarity", "--store", "{store}", "--model", "m", "--dataset", "d",
                                 "--out", "{files}/out"), V999, store="v999"),
    Row("analyze bad layers", ("analyze", "similarity", "--store", "{store}", "--model", "{model_name}", "--dataset", "pairs",
                               "--layers", "x", "--out", "{files}/out"), r"--layers"),
    Row("logit lens on a last-token run", ("analyze", "logit-lens", "--store", "{store}", "--model", "{model_name}",
                                           "--dataset", "pairs", "--out", "{files}/out"),
        r"the logit lens needs every token's states, but this run stores only each example's last-token state "
        r"\(extracted with --positions last\)", store="lastonly"),
    Row("mean similarity on a last-token run", ("analyze", "similarity", "--store", "{store}", "--model", "{model_name}",
                                                "--dataset", "pairs", "--pool", "mean", "--out", "{files}/out"),
        r"the mean over each example's tokens needs every token's states, but this run stores only each example's "
        r"last-token state", store="lastonly"),
    Row("analyze a layer a subset run lacks", ("analyze", "similarity", "--store", "{store}", "--model", "{model_name}",
                                               "--dataset", "pairs", "--layers", "1", "--out", "{files}/out"),
        r"layer 1 is not in this run; it stores layers 0, 2", store="lastonly"),
    Row("push unknown scheme", ("push", "{store}", "foo://bucket/acts.zarr", "--quiet"), r"unknown URL scheme 'foo://'"),
    Row("push newer format", ("push", "{store}", "{files}/copy.zarr", "--quiet"), V999, store="v999"),
    Row("pull missing source", ("pull", "{files}/nothere.zarr", "{files}/copy.zarr", "--quiet"), r"no actstore store at", store=None),
]

NOISE = re.compile(r"\d+%\|")  # transformers' own progress bars while a model loads


def tree_hash(path: Path) -> str:
    """A hash of every file (name and bytes) under ``path``: what a failed command must leave alone."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


def make_files(files: Path, model_dir: Path) -> None:
    files.mkdir(parents=True, exist_ok=True)
    good = '{"id": "a", "en": "hello there", "zh": "你好"}\n'
    (files / "bad.jsonl").write_text(good + '{"id": "b", "en": "ok"}\n' + '{"id": "c", "en": "unterminated\n')
    (files / "notobj.jsonl").write_text(good + "[1, 2]\n")
    (files / "empty.jsonl").write_text("")
    (files / "latin1.jsonl").write_bytes(good.encode() + '{"id": "b", "en": "caf\xe9"}\n'.encode("latin-1"))
    (files / "dupid.jsonl").write_text(good + good)
    (files / "number.jsonl").write_text('{"id": "a", "en": 5}\n')
    (files / "emptycol.csv").write_text("id,,en\n1,x,hello\n")
    (files / "dupcol.csv").write_text("id,en,en\n1,hello,hi\n")
    (files / "noheader.csv").write_text("")
    (files / "headeronly.csv").write_text("id,en\n")
    (files / "toolong.csv").write_text("id,en\n1,hello\n2,hi,extra\n")
    (files / "data.txt").write_text("hello\n")
    (files / "broken.py").write_text("def f(:\n")
    (files / ("数" * 80 + ".jsonl")).write_text(good)
    (files / "notgguf.gguf").write_bytes(b"this is not a GGUF file\n" * 8)
    # a real GGUF header (magic, version 3, 291 tensors, 24 metadata entries), cut off inside the first key
    (files / "truncated.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 291, 24) + struct.pack("<Q", 20) + b"general.arch")
    pickled = files / "pickled"
    pickled.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, pickled / name)
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")  # a pickle: must never be loaded
    (files / "emptydir").mkdir()
    (files / "plainfile").write_text("a file, not a directory\n")


def make_stores(stores: Path, model_dir: Path, pairs: Path) -> dict[str, Path]:
    good = stores / "good" / "acts.zarr"
    actstore.extract(model=str(model_dir), dataset=str(pairs), store=str(good), progress=False)
    v999 = stores / "v999" / "acts.zarr"
    shutil.copytree(good, v999)
    meta = json.loads((v999 / "zarr.json").read_text())
    meta["attributes"]["actstore_format"] = 999
    (v999 / "zarr.json").write_text(json.dumps(meta))
    corrupt = stores / "corrupt" / "acts.zarr"
    shutil.copytree(good, corrupt)
    (corrupt / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gro')
    runcorrupt = stores / "runcorrupt" / "acts.zarr"
    shutil.copytree(good, runcorrupt)
    (runcorrupt / model_dir.name / "pairs" / "zarr.json").write_text("{")
    notstore = stores / "notstore" / "acts.zarr"
    notstore.mkdir(parents=True)
    (notstore / "notes.txt").write_text("my notes, not a store\n")
    plainzarr = stores / "plainzarr" / "acts.zarr"
    import zarr

    zarr.open_group(str(plainzarr), mode="w")
    lastonly = stores / "lastonly" / "acts.zarr"  # a selective run: two layers, each example's last token
    actstore.extract(model=str(model_dir), dataset=str(pairs), store=str(lastonly), layers="0,2", positions="last",
                     progress=False)
    return {"good": good, "v999": v999, "corrupt": corrupt, "runcorrupt": runcorrupt, "notstore": notstore,
            "plainzarr": plainzarr, "lastonly": lastonly}


def check(row: Row, index: int, world: dict, cli) -> str | None:
    """None when the row is handled as it should be; otherwise what went wrong."""
    store = None
    if row.store is not None:
        store = world["tmp"] / f"row{index}" / "acts.zarr"
        store.parent.mkdir(parents=True)
        shutil.copytree(world["stores"][row.store], store, symlinks=True)
    values = {"model": world["model"], "model_name": Path(world["model"]).name, "files": world["files"],
              "pairs": world["pairs"], "store": store}
    args = [arg.format(**values) for arg in row.args]
    before = tree_hash(store) if store else None
    started = time.perf_counter()
    result = cli(*args, timeout=300, env=row.env)
    world["seconds"][row.name] = time.perf_counter() - started
    lines = [line for line in result.stderr.splitlines() if line.strip() and not NOISE.search(line)]
    if "Traceback" in result.stderr:
        return f"traceback: {result.stderr[-300:]}"
    if result.returncode == 0:
        return f"exit 0; stdout {result.stdout[-200:]!r}"
    if len(lines) != 1:
        return f"{len(lines)} lines on stderr: {lines[:4]}"
    if not lines[0].startswith("actstore: error: "):
        return f"not an actstore error line (exit {result.returncode}): {lines[0]}"
    if not re.search(row.expect, lines[0]):
        return f"message does not name the problem: {lines[0]}"
    if store and tree_hash(store) != before:
        return "the store changed"
    return None


@pytest.fixture(scope="module")
def world(tiny_model_dir, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("bad-input")
    model_dir = tiny_model_dir("llama")
    pairs = tmp / "pairs.jsonl"
    rows = [{"id": "cat", "en": "The cat sits on the table.", "zh": "猫坐在桌子上。", "fr": "Le chat est assis sur la table."},
            {"id": "pw", "en": "Change my password", "zh": "修改我的密码", "fr": "Modifier mon mot de passe"}]
    pairs.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    make_files(tmp / "files", model_dir)
    return {"tmp": tmp, "model": str(model_dir), "pairs": str(pairs), "files": str(tmp / "files"), "seconds": {},
            "stores": make_stores(tmp / "stores", model_dir, pairs)}


def test_rows_are_unique_and_plenty():
    assert len({row.name for row in ROWS}) == len(ROWS) >= 30


def test_every_bad_input_gets_one_line_and_leaves_stores_alone(world, monkeypatch):
    monkeypatch.setenv("ACTSTORE_CACHE", str(world["tmp"] / "cache"))  # a failed GGUF conversion caches nothing here
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cli = ForkedCli()
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda item: check(item[1], item[0], world, cli), enumerate(ROWS)))
    failures = [f"{row.name}: {outcome}" for row, outcome in zip(ROWS, outcomes) if outcome is not None]
    slowest = sorted(world["seconds"].items(), key=lambda item: -item[1])[:5]
    print(f"\nbad inputs tried {len(ROWS)} / handled {len(ROWS) - len(failures)}; slowest: "
          + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in slowest))
    for failure in failures:
        print("  NOT HANDLED", failure)
    assert not failures, "\n".join(failures)
    converted = world["tmp"] / "cache" / "models"
    assert not converted.exists() or not list(converted.iterdir()), "a failed GGUF conversion left a cache entry"
