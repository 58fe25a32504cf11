"""Measured results against the paper (Table 2 and the claims of §4.1).

Three kinds of checks:
1. The metric is the paper's definition: a random pairing of test images scores ≈ 100 %, identical
   images 0 %, on real images.
2. `results/paper_table2.json` is Table 2 as printed: the table is parsed out of the paper's text and
   every cell compared, so the JSON is provably typed from the paper.
3. The paper's qualitative claims, on committed measurements `results/<preset>/<run-id>/eval/metrics.json`
   (written by `python -m repro.evaluate`). Each claim is first checked on the paper's own Table 2 (so it
   is the paper's claim), then on every group of comparable measured results. Where no committed run
   covers a claim the test is skipped with a message naming what is missing and why.

No number compared here is typed in this file: they come from the paper, the JSON, or metrics.json.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import defaultdict
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TABLE_PATH = REPO / "results" / "paper_table2.json"
TABLE = json.loads(TABLE_PATH.read_text())
LAYERS = tuple(TABLE["column_taps"][c] for c in TABLE["columns"])  # pool5, fc6, fc7, fc8: shallow → deep
NOT_PAPER_PROTOCOL = ("the paper inverted CaffeNet with its original weights at 227 px and evaluated on the "
                      "ILSVRC-2012 validation set; those weights are not obtainable here, so runs use the "
                      "torchvision-layout AlexNet (pretrained conv1–5) at reduced resolution on imagenet-1k-256")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The 2 cores are shared with other jobs: one intra-op thread avoids spinning against them (4–6× faster
    under load than 2 threads)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------
# 1. The metric reproduces the definition
# ---------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def eval_images(assets):
    from repro.data import list_images, load_images

    return load_images(list_images(assets / "imagenet-1k-256")[:48], 64)


def derangement(n: int, seed: int = 0) -> torch.Tensor:
    """A random permutation without fixed points: pairs every image with a different one."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    partner = torch.empty(n, dtype=torch.long)
    partner[order] = order.roll(1)
    return partner


def test_normalised_error_is_the_papers_definition(eval_images):
    from repro.comparators import build_comparator
    from repro.metrics import normalised_error, pairwise_mean_distance

    x = eval_images
    flat = x.flatten(1)
    # N = mean Euclidean distance over all pairs of *different* samples (an independent computation).
    distances = torch.cdist(flat.double(), flat.double())
    n = x.shape[0]
    expected_n = distances.sum() / (n * (n - 1))
    assert float(pairwise_mean_distance(x)) == pytest.approx(float(expected_n), rel=1e-4)

    assert float(normalised_error(x, x, pairwise_mean_distance(x))) == 0.0
    with torch.no_grad():
        features = build_comparator("alexnet", "pool5", 64)(x)
    for name, data in (("image", x), ("feature", features)):
        norm = pairwise_mean_distance(data)
        rates = [float(normalised_error(data[derangement(n, seed)], data, norm)) for seed in range(5)]
        random_pairing = sum(rates) / len(rates)
        # "an error of 100% means that the algorithm performs the same as randomly drawing a sample"
        assert 0.9 < random_pairing < 1.1, f"{name} space: random pairing scored {random_pairing:.3f}, not ≈ 1"
        half = float(normalised_error(0.5 * data + 0.5 * data[derangement(n)], data, norm))
        assert half < random_pairing  # closer images score lower


# ---------------------------------------------------------------------------------------------------
# 2. results/paper_table2.json is Table 2 as printed
# ---------------------------------------------------------------------------------------------------
def paper_text() -> str:
    candidates = [REPO / TABLE["source"]["file"]]
    if os.environ.get("DEEPSIM_ASSETS"):
        candidates.append(Path(os.environ["DEEPSIM_ASSETS"]).parent / "papers" / Path(TABLE["source"]["file"]).name)
    for path in candidates:
        if path.is_file():
            assert hashlib.sha256(path.read_bytes()).hexdigest() == TABLE["source"]["file_sha256"], (
                f"{path} is not the paper text results/paper_table2.json was transcribed from")
            return path.read_text(encoding="utf-8")
    pytest.fail(f"paper text not found at {', '.join(map(str, candidates))}: put the project beside ../shared "
                "(or set DEEPSIM_ASSETS) so Table 2 can be checked against the paper")


def parse_cell(text: str) -> dict[str, int | None] | None:
    """'71/19' → {"image": 71, "feature": 19}; '35/-' → feature None; '-/-' → None (not reported)."""
    image, feature = (None if part == "-" else int(part) for part in text.split("/"))
    return None if image is None and feature is None else {"image": image, "feature": feature}


def parse_table2(text: str) -> tuple[str, list[str], dict[str, dict[str, dict | None]]]:
    """(caption, columns, {row label: {column: cell}}) of Table 2, read from the paper's text."""
    lines = text.splitlines()
    caption_at = next(i for i, line in enumerate(lines) if line.startswith("Table 2:"))
    header_at = max(i for i in range(caption_at) if re.fullmatch(r"\s*CONV5\s+FC6\s+FC7\s+FC8\s*", lines[i]))
    columns = lines[header_at].split()
    rows = {}
    for line in lines[header_at + 1 : caption_at]:
        if not line.strip():
            continue
        label, *cells = line.split("\t")
        assert len(cells) == len(columns), f"Table 2 row {line!r} does not have {len(columns)} cells"
        rows[label.strip()] = {c: parse_cell(v.strip()) for c, v in zip(columns, cells)}
    return lines[caption_at].strip(), columns, rows


def test_table2_json_is_the_papers_table():
    caption, columns, printed = parse_table2(paper_text())
    assert TABLE["source"]["caption"] == caption
    assert TABLE["columns"] == columns
    labels = [row["paper_label"] for row in TABLE["rows"]]
    assert labels == list(printed), f"rows {labels} differ from the paper's {list(printed)}, or their order"
    # The parser reads what is printed: a one-digit change in the text shows up in the parsed table.
    tampered = parse_table2(paper_text().replace("\t82/16\t", "\t82/61\t"))[2]
    assert tampered["M & V [21]"]["FC7"] != printed["M & V [21]"]["FC7"]
    for row in TABLE["rows"]:
        for column in columns:
            assert row["cells"][column] == printed[row["paper_label"]][column], (
                f"{row['name']} {column}: JSON {row['cells'][column]} but the paper prints "
                f"{printed[row['paper_label']][column]}")


# ---------------------------------------------------------------------------------------------------
# 3. Claims, on the paper's table and on committed measurements
# ---------------------------------------------------------------------------------------------------
def paper_records() -> list[dict]:
    """Table 2 as records shaped like the measured ones (errors in %)."""
    out = []
    for row in TABLE["rows"]:
        for column, cell in row["cells"].items():
            if cell is not None:
                out.append({"source": f"paper Table 2, {row['name']} {column}", "method": row["method"],
                            "comparators": row["comparators"], "layer": TABLE["column_taps"][column],
                            "group": ("paper",), "step": None,
                            "image_error_pct": cell["image"], "feature_error_pct": cell["feature"]})
    return out


def metrics_files() -> list[Path]:
    return sorted(REPO.glob("results/*/*/eval/metrics.json"))


def measured_records() -> list[dict]:
    """A representative result row per method and setting from the committed metrics.json files."""
    out = []
    for path in metrics_files():
        data = json.loads(path.read_text())
        protocol = data["protocol"]
        group = tuple(protocol[k] for k in ("encoder", "encoder_weights", "resolution", "eval_data", "n_images"))
        for result in data["results"]:
            out.append({"source": f"{path.relative_to(REPO)} [{result['method']}]", "preset": data["preset"],
                        "layer": data["layer"], "layer_depth": protocol.get("layer_depth"), "group": group,
                        "paper_protocol": protocol["paper_protocol"], **result})
    return representatives(out)


def comparator_id(record: dict) -> tuple | str | None:
    return tuple(record["comparators"] or ()) if "comparators" in record else record.get("comparator")


def representatives(records: list[dict]) -> list[dict]:
    """One record per (protocol, layer, method, comparator, training steps); for M&V, which trains nothing,
    the longest optimisation per (protocol, layer)."""
    best: dict[tuple, dict] = {}
    for r in records:
        key = (r["group"], r["layer"], r["method"], comparator_id(r), r["step"])
        effort = r.get("mv_config", {}).get("steps", 0) if r["step"] is None else r["step"]
        if key not in best or effort > best[key]["_effort"]:
            best[key] = {**r, "_effort": effort}
    return list(best.values())


def comparable(a: dict, b: dict) -> bool:
    """Same evaluation images, encoder (and its weights), resolution and inverted layer, and, for two
    trained generators, the same number of training steps: a method trained longer must not win by that.
    M&V (step None) optimises per image and is comparable with every generator of its setting."""
    same_training = a["step"] is None or b["step"] is None or a["step"] == b["step"]
    return a["group"] == b["group"] and a["layer"] == b["layer"] and same_training


def same_comparator(a: dict, b: dict) -> bool:
    """An ablation is compared with the full loss of its own comparator (a run without a feature loss has
    none and is compared with every one)."""
    ca, cb = comparator_id(a), comparator_id(b)
    return not ca or not cb or ca == cb


def pairs(records: list[dict], method_a: str, method_b: str, key: str) -> list[tuple[dict, dict]]:
    return [(a, b) for a in records for b in records
            if a["method"] == method_a and b["method"] == method_b and comparable(a, b) and same_comparator(a, b)
            and a.get(key) is not None and b.get(key) is not None]


def skip_uncovered(claim: str, needs: str) -> None:
    pytest.skip(f"claim not covered by any committed run: {claim}. It needs {needs} under "
                f"results/<preset>/<run-id>/eval/metrics.json (python -m repro.evaluate RUN_DIR); found "
                f"{len(metrics_files())} metrics.json file(s) and none with such a pair")


def test_committed_metrics_record_what_was_measured():
    files = metrics_files()
    if not files:
        pytest.skip("no committed results/<preset>/<run-id>/eval/metrics.json yet: nothing measured to check")
    for path in files:
        data = json.loads(path.read_text())
        for key in ("preset", "layer", "protocol", "results", "provenance"):
            assert key in data, f"{path}: missing {key!r}"
        for key in ("command", "commit", "step", "n_images", "data", "device", "wall_time_s"):
            assert key in data["provenance"], f"{path}: provenance lacks {key!r}"
        assert data["preset"] == path.parents[2].name, f"{path} lies under another preset's folder"
        for result in data["results"]:
            assert result["method"], f"{path}: a result without a method"
            for key in ("image_error_pct", "feature_error_pct"):
                assert math.isfinite(result[key]) and result[key] >= 0, f"{path}: {result['method']} {key}"


def check_image_loss_vs_deepsim(records: list[dict]) -> int:
    found = pairs(records, "image-loss", "deepsim", "feature_error_pct")
    for image_loss, deepsim in found:
        assert image_loss["image_error_pct"] < deepsim["image_error_pct"], (image_loss["source"], deepsim["source"])
        assert image_loss["feature_error_pct"] > deepsim["feature_error_pct"], (image_loss["source"], deepsim["source"])
    return len(found)


def test_image_loss_has_lower_image_error_and_higher_feature_error_than_deepsim():
    assert check_image_loss_vs_deepsim(paper_records()) >= 1  # the paper's own numbers: FC6
    if check_image_loss_vs_deepsim(measured_records()) == 0:
        skip_uncovered("image-loss baseline has lower image-space and higher feature-space error than DeePSiM "
                       "(Table 2, 'Our image loss' vs 'AlexNet CONV5')",
                       "an image-loss run (preset *-image) and a DeePSiM run with the same encoder, layer, "
                       "resolution and evaluation images")


def check_image_loss_is_blurrier(records: list[dict]) -> int:
    found = pairs(records, "image-loss", "deepsim", "sharpness_pct")
    for image_loss, deepsim in found:
        assert image_loss["sharpness_pct"] < deepsim["sharpness_pct"], (image_loss["source"], deepsim["source"])
    return len(found)


def test_image_loss_reconstructions_are_blurrier_than_deepsims():
    """§1 and Fig. 3: a pixel loss gives over-smoothed images, DeePSiM sharp ones. The paper shows it in
    pictures, not numbers, so only measured runs are checked (local contrast, repro.metrics.gradient_energy)."""
    if check_image_loss_is_blurrier(measured_records()) == 0:
        skip_uncovered("image-loss reconstructions are blurrier (less local contrast) than DeePSiM's",
                       "an image-loss run and a DeePSiM run evaluated with sharpness_pct (repro.evaluate since "
                       "sharpness was added) on the same images, encoder, layer and training steps")


# The methods Table 2 compares; the M&V claim is made among them (the ablations of Fig. 1 are not in it).
TABLE2_METHODS = {row["method"] for row in TABLE["rows"]}


def check_mv_extremes(records: list[dict]) -> int:
    checked = 0
    for mv in (r for r in records if r["method"] == "mahendran-vedaldi"):
        others = [r for r in records if r["method"] != "mahendran-vedaldi" and r["method"] in TABLE2_METHODS
                  and comparable(mv, r)]
        for other in others:
            assert mv["image_error_pct"] > other["image_error_pct"], (mv["source"], other["source"])
            if other["feature_error_pct"] is not None:
                assert mv["feature_error_pct"] < other["feature_error_pct"], (mv["source"], other["source"])
            checked += 1
    return checked


def test_mv_has_the_lowest_feature_error_and_the_highest_image_error():
    assert check_mv_extremes(paper_records()) >= 1  # holds in every comparison Table 2 allows
    if check_mv_extremes(measured_records()) == 0:
        skip_uncovered("Mahendran & Vedaldi has the lowest feature-space and the highest image-space error",
                       "an evaluation run with --mv-steps > 0 (M&V on the same images and encoder as the generator)")


def depth_of(record: dict) -> int | None:
    """Position of the inverted layer in its network: the encoder's tap order where recorded, else Table 2's."""
    if record.get("layer_depth") is not None:
        return record["layer_depth"]
    return LAYERS.index(record["layer"]) if record["layer"] in LAYERS else None


# Measured where the claim does not hold, keyed (encoder, shallower tap, deeper tap). Checked the other way
# round, so the day a committed run makes it hold the entry must go.
DEPTH_NOT_YET = {
    ("caffenet-random", "fc7", "fc8"): (
        "random-weight CaffeNet at 96 px, 2000 steps (results/random-fc7, results/random-fc8): fc8 73.7 % vs "
        "fc7 76.8 % image error. Both generators output nearly the same image for every input "
        "(results/figures/depth-random-caffenet-2000-steps.png), so this compares two near-constant outputs' "
        "distance to the data, not information kept by the layer; pool5 → fc6 → fc7 does grow"),
}


def check_depth(records: list[dict]) -> int:
    """Image-space error grows with the depth of the inverted layer, per method and setting; the pairs of
    DEPTH_NOT_YET are checked to still break it (not skipped), so a stale entry fails with its reason."""
    series = defaultdict(dict)
    for r in records:
        if depth_of(r) is not None:
            series[(r["method"], comparator_id(r), r["group"], r["step"])][depth_of(r)] = r
    checked = 0
    for (_, _, group, _), by_depth in series.items():
        ordered = [by_depth[depth] for depth in sorted(by_depth)]
        for shallow, deep in zip(ordered, ordered[1:]):
            known = DEPTH_NOT_YET.get((group[0], shallow["layer"], deep["layer"]))
            if known:
                assert shallow["image_error_pct"] >= deep["image_error_pct"], (
                    f"now holds, remove it from DEPTH_NOT_YET ({known}): {shallow['source']} vs {deep['source']}")
                continue
            assert shallow["image_error_pct"] < deep["image_error_pct"], (shallow["source"], deep["source"])
            checked += 1
    return checked


def test_image_error_grows_with_the_depth_of_the_inverted_layer():
    assert check_depth(paper_records()) >= 1  # M&V, D&B and AlexNet CONV5 rows, CONV5 → FC8
    if check_depth(measured_records()) == 0:
        skip_uncovered("errors grow with the depth of the inverted layer (Table 2, each row left to right)",
                       "runs of one method inverting two or more of pool5/fc6/fc7/fc8 (e.g. --set layer=fc6) with "
                       "the same encoder, resolution and evaluation images")


# The paper's criterion for each ablation. Only the image-loss ablation has numbers (Table 2); the others
# are shown in Fig. 1 and described in words, so we measure what the words describe.
ABLATIONS = {
    "image-loss": ("feature_error_pct", "Table 2: 'Our image loss' vs 'AlexNet CONV5' at FC6, feature space"),
    "deepsim-no-feat": ("feature_error_pct", "Fig. 1(c): with image + adversarial loss 'the reconstructions do not "
                                             "correspond to actual objects originally contained in the image'"),
    "deepsim-no-adv": ("lpips", "Fig. 1(d): without the adversarial loss 'predictions look very noisy' "
                                "(visual only; LPIPS as the perceptual stand-in)"),
    # deepsim-no-img: the paper finds it 'similar to the full model', so there is no claim to check.
}


def check_ablation(records: list[dict], ablation: str) -> int:
    metric = ABLATIONS[ablation][0]
    found = pairs(records, "deepsim", ablation, metric)
    for full, ablated in found:
        assert full[metric] < ablated[metric], f"{metric}: {full['source']} vs {ablated['source']}"
    return len(found)


# Measured where it does not (yet) hold; strict, so the day a committed run makes it hold the marker must go.
NO_ADV_NOT_YET = pytest.mark.xfail(strict=True, reason=(
    "at 96 px and 3600 steps (results/small-pool5, results/ablation-no-adv) the full loss has the higher LPIPS "
    "(0.54 vs 0.47): its adversarial term is still in the texture phase, and LPIPS on the AlexNet backbone shares "
    "the comparator that the no-adv run matches directly; the paper's Fig. 1(d) was trained for 500k+ steps"))


@pytest.mark.parametrize("ablation", [
    "image-loss", "deepsim-no-feat", pytest.param("deepsim-no-adv", marks=NO_ADV_NOT_YET)])
def test_full_loss_beats_the_ablation_on_the_papers_criterion(ablation):
    if ablation == "image-loss":
        assert check_ablation(paper_records(), ablation) >= 1  # Table 2 carries the image-loss ablation
    if check_ablation(measured_records(), ablation) == 0:
        metric, why = ABLATIONS[ablation]
        skip_uncovered(f"the full loss beats {ablation} on {metric} ({why})",
                       f"a DeePSiM run (small-pool5) and a {ablation} run evaluated on the same images, encoder and "
                       "layer, trained for as many steps")


# A reproduction under the paper's protocol should land within this many points (absolute %) of a printed
# cell: the paper gives whole percentages and does not say how many validation images it used.
TOLERANCE_PCT = 10


def test_table2_cells_under_the_papers_protocol():
    """Each printed cell against a measurement under the paper's protocol, if one was committed."""
    measured = [r for r in measured_records() if r["paper_protocol"]]
    covered, uncovered = [], []
    for paper in paper_records():
        match = [m for m in measured if m["method"] == paper["method"] and m["layer"] == paper["layer"]
                 and (paper["comparators"] is None or m.get("comparator") in paper["comparators"])]
        (covered if match else uncovered).append((paper, match))
    for paper, match in covered:
        for m in match:
            for key in ("image_error_pct", "feature_error_pct"):
                if paper[key] is not None:
                    assert abs(m[key] - paper[key]) <= TOLERANCE_PCT, (
                        f"{m['source']} {key} {m[key]:.1f} vs {paper['source']} {paper[key]}")
    if uncovered:
        cells = ", ".join(p["source"].removeprefix("paper Table 2, ") for p, _ in uncovered)
        pytest.skip(f"Table 2 cells with no run under the paper's protocol: {cells}. Why: {NOT_PAPER_PROTOCOL}; "
                    "the D&B row needs their original generators, which we do not have")
