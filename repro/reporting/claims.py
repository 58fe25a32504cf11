"""The paper's claims (Table 2, §4.1, Fig. 1, Fig. 3) as rules over measured records; nothing here measures.

A record is one method's result on one setting and seed: a row of Table 2 (`paper_records`) or of a committed
`results/<preset>/<run>/eval/metrics.json` (`measured_records`, written by `python -m repro.evaluate`). A claim
compares pairs of records of the same setting (same evaluation images, encoder and its weights, image resolution
and the resolution the encoder saw them at, inverted layer and, for two trained generators, training steps and
seed). Claims are judged per *scale* (`scale_of`: the image resolution and how the encoder saw the images, e.g.
"96 px" or "CONV5* (96 px images, encoder at 227 px)"), so a run of one protocol never answers for another.
A DeePSiM run stands for the paper's only with a comparator the paper's claims were made with
(`PAPER_COMPARATORS`: Table 2's rows); Fig. 6's random-weight comparator is shown, not claimed in numbers.
Each pair:
- is *not measurable* when either run finds its own originals no better than the chance rule allows
  (`repro.evaluation.scores.identification`: ≥ 10 × 1/n): such a run shows one image whatever its input;
- else *fails*, or *holds* when, for every metric it compares, its margin exceeds the spread between seeds
  (max − min of the metric over the seeds of each method's setting, steps and comparator; `seed_spreads`), and
  is *not measurable* when it does not (one seed: no spread, the line says "1 seed").
A claim fails on any measurable counter-example, holds when some comparison holds and none fails; otherwise it
is not measurable at this scale, not measured (the committed evaluations predate its metric) or not covered
(no committed pair). `tests/test_paper_numbers.py` asserts these on the committed results, per scale;
`tests/test_claims.py` runs each rule on plausible wrong results; `repro.reporting.report` prints them.
"""
from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from repro.assets import REPO_ROOT
from repro.evaluation.scores import IDENTIFICATION_FACTOR, INDEPENDENT_NET, identification

RESULTS = REPO_ROOT / "results"
TABLE = json.loads((RESULTS / "paper_table2.json").read_text())
LAYERS = tuple(TABLE["column_taps"][c] for c in TABLE["columns"])  # pool5, fc6, fc7, fc8: shallow → deep
TABLE2_METHODS = {row["method"] for row in TABLE["rows"]}           # the M&V claim is made among these


# ---------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------
def paper_records(table: dict = TABLE) -> list[dict]:
    """Table 2 as records shaped like the measured ones (errors in %)."""
    out = []
    for row in table["rows"]:
        for column, cell in row["cells"].items():
            if cell is not None:
                out.append({"source": f"paper Table 2, {row['name']} {column}", "method": row["method"],
                            "comparators": row["comparators"], "layer": table["column_taps"][column],
                            "group": ("paper",), "step": None,
                            "image_error_pct": cell["image"], "feature_error_pct": cell["feature"]})
    return out


def metrics_files(root: Path = RESULTS) -> list[Path]:
    """Every run's evaluation, `<preset>/<run>/eval/metrics.json` (folders one deeper, such as
    `conv5star/candidates/<name>/eval`, are probes, not claim runs)."""
    return sorted(root.glob("*/*/eval/metrics.json"))


def scale_of(protocol: dict) -> str:
    """The scale a metrics.json's protocol was measured at: its image resolution and the one the encoder saw the
    images at (metrics.json files older than `encoder_resolution` saw them as they were). Encoder at 227 px beside
    smaller images is protocol CONV5* (`repro.config`): the paper's code from reduced images. Runs whose G started
    from a generator file (`Config.init_generator`) form a scale of their own: a different schedule."""
    resolution = protocol["resolution"]
    encoder_side = protocol.get("encoder_resolution") or resolution
    seen = f"{resolution} px images, encoder at {encoder_side} px"
    scale = f"{resolution} px" if encoder_side == resolution else f"CONV5* ({seen})" if encoder_side == 227 else seen
    start = protocol.get("init_generator")
    return f"{scale}, G warm-started from {start.split()[0]}" if start else scale


def scales(records: list[dict]) -> list[str]:
    """The scales present among these records, CONV5* first (the protocol that keeps the paper's code)."""
    return sorted({r["scale"] for r in records if r.get("scale")}, key=lambda s: (not s.startswith("CONV5*"), s))


def seed_of(path: Path, protocol: dict) -> int | None:
    """The training seed: recorded in the protocol since CONV5*; before, in the published run's provenance.json
    (`results/<preset>/<run>/provenance.json`, its config) beside the eval folder; None when neither says."""
    if protocol.get("seed") is not None:
        return protocol["seed"]
    provenance = path.parents[1] / "provenance.json"
    if provenance.is_file():
        return json.loads(provenance.read_text()).get("config", {}).get("seed")
    return None


def measured_records(root: Path = RESULTS) -> list[dict]:
    """A representative result row per method, setting and seed from the committed metrics.json files; `source`
    names the file as `results/<preset>/<run>/eval/metrics.json [method]` (`root`'s name first)."""
    out = []
    for path in metrics_files(root):
        data = json.loads(path.read_text())
        protocol = data["protocol"]
        group = (protocol.get("encoder"), protocol.get("encoder_weights"), protocol.get("resolution"),
                 protocol.get("encoder_resolution") or protocol.get("resolution"), protocol.get("eval_data"),
                 protocol.get("n_images"), protocol.get("init_generator", ""))
        for result in data["results"]:
            out.append({"source": f"{root.name}/{path.relative_to(root).as_posix()} [{result['method']}]", "path": path,
                        "preset": data["preset"], "layer": data["layer"], "layer_depth": protocol.get("layer_depth"),
                        "group": group, "scale": scale_of(protocol), "seed": seed_of(path, protocol),
                        "paper_protocol": protocol.get("paper_protocol", False),
                        "n_images": protocol.get("n_images", data["provenance"]["n_images"]), **result})
    return representatives(out)


def comparator_id(record: dict) -> tuple | str | None:
    return tuple(record["comparators"] or ()) if "comparators" in record else record.get("comparator")


def run_key(record: dict) -> tuple:
    """What the seeds of one experiment share: setting, layer, method, comparator and training steps."""
    return (record["group"], record["layer"], record["method"], comparator_id(record), record["step"])


def representatives(records: list[dict]) -> list[dict]:
    """One record per (protocol, layer, method, comparator, training steps, seed); for M&V, which trains
    nothing, the longest optimisation per (protocol, layer, seed of the run it was evaluated beside)."""
    best: dict[tuple, dict] = {}
    for r in records:
        key = (*run_key(r), r.get("seed"))
        effort = r.get("mv_config", {}).get("steps", 0) if r["step"] is None else r["step"]
        if key not in best or effort > best[key]["_effort"]:
            best[key] = {**r, "_effort": effort}
    return list(best.values())


def comparable(a: dict, b: dict) -> bool:
    """Same evaluation images, encoder (and its weights), resolution, encoder resolution, warm start (the
    generator file G started from, if any) and inverted layer,
    and, for two trained generators, the same number of training steps and the same seed: a method trained
    longer must not win by that, and seeds are compared like with like. M&V (step None) optimises per image and
    is comparable with every generator of its setting; a record without a seed with every seed."""
    trained = a["step"] is not None and b["step"] is not None
    same_training = not trained or a["step"] == b["step"]
    same_seed = not trained or a.get("seed") is None or b.get("seed") is None or a["seed"] == b["seed"]
    return a["group"] == b["group"] and a["layer"] == b["layer"] and same_training and same_seed


def same_comparator(a: dict, b: dict) -> bool:
    """An ablation is compared with the full loss of its own comparator (a run without a feature loss has
    none and is compared with every one)."""
    ca, cb = comparator_id(a), comparator_id(b)
    return not ca or not cb or ca == cb


# The comparators the paper's claims were made with: Table 2's DeePSiM rows (AlexNet/CaffeNet CONV5, VideoNet
# CONV5; Figs. 1 and 3 use AlexNet CONV5). A DeePSiM run with another comparator (Fig. 6's random weights) is
# another experiment: the paper shows it, and claims nothing of it in numbers.
PAPER_COMPARATORS = frozenset(c for row in TABLE["rows"] for c in row["comparators"] or ())


def paper_comparator(record: dict) -> bool:
    """No comparator (image loss, no-feat, M&V), or one the paper's claims were made with."""
    found = comparator_id(record)
    return not found or bool(set(found if isinstance(found, tuple) else (found,)) & PAPER_COMPARATORS)


def pairs(records: list[dict], method_a: str, method_b: str, key: str | None = None) -> list[tuple[dict, dict]]:
    """Comparable pairs (a of method_a, b of method_b), both with a comparator the paper's claims speak for (or
    none); with `key`, only those where both records have it."""
    return [(a, b) for a in records for b in records
            if a["method"] == method_a and b["method"] == method_b and comparable(a, b) and same_comparator(a, b)
            and paper_comparator(a) and paper_comparator(b)
            and (key is None or (a.get(key) is not None and b.get(key) is not None))]


# ---------------------------------------------------------------------------------------------------
# Verdicts
# ---------------------------------------------------------------------------------------------------
@dataclass
class Verdict:
    """What the comparisons of one claim found, each as a one-line description."""

    holds: list[str] = field(default_factory=list)
    fails: list[str] = field(default_factory=list)
    not_measurable: list[str] = field(default_factory=list)
    within_spread: list[str] = field(default_factory=list)  # held, but by no more than the spread between seeds


def at_chance(record: dict) -> str | None:
    """Why a record cannot carry a claim between two runs (None when it can): its reconstructions must find
    their own originals at least IDENTIFICATION_FACTOR × chance (1/n) of the time. The paper's rows pass: its
    figures show its generators reconstructing their inputs."""
    if record["group"] == ("paper",):
        return None
    if record.get("nn_own_image_pct") is None or record.get("nn_own_feature_pct") is None:
        return f"{record['source']} records no nearest-own-original rates, so whether it reconstructs its inputs is unknown"
    rule = identification(record, record["n_images"])
    if rule["above_chance"]:
        return None
    return (f"{record['source']} finds its own original for {rule['rate_pct']:.2f} % of {record['n_images']} images, "
            f"below {IDENTIFICATION_FACTOR} × chance ({rule['threshold_pct']:.1f} %; chance {rule['chance_pct']:.2f} %)")


def seed_spreads(record: dict, records: list[dict], metrics: tuple[str, ...]) -> tuple[int, dict[str, float]]:
    """(seeds, {metric: max − min}) over the seeds of the record's experiment (`run_key`) among `records`."""
    seeds = [r for r in records if run_key(r) == run_key(record)] or [record]
    spreads = {}
    for metric in metrics:
        values = [r[metric] for r in seeds if r.get(metric) is not None]
        spreads[metric] = max(values) - min(values) if values else 0.0
    return len(seeds), spreads


def difference(a: dict, b: dict, metric: str) -> float:
    """An ordering comparison's margin: how far the two values are from a tie."""
    return abs(a[metric] - b[metric])


def against_seeds(a: dict, b: dict, records: list[dict], metrics: tuple[str, ...],
                  margin: Callable[[dict, dict, str], float] = difference) -> tuple[str, list[str]]:
    """(note, shortfalls) for a comparison that holds: how many seeds each side has and, with more than one,
    each metric's margin against the larger of the two sides' seed spreads; `shortfalls` lists the metrics whose
    margin does not exceed it. One seed each: no spread, nothing falls short (the note says so). Table 2's
    rows carry no seeds."""
    if a["group"] == ("paper",):
        return "", []
    (n_a, spread_a), (n_b, spread_b) = seed_spreads(a, records, metrics), seed_spreads(b, records, metrics)
    seeds = seed_count(a, b, records)
    if n_a == n_b == 1:
        return seeds, []
    parts, shortfalls = [], []
    for metric in metrics:
        spread, gap = max(spread_a[metric], spread_b[metric]), margin(a, b, metric)
        part = f"{metric} margin {gap:.3g} {'above' if gap > spread else 'below'} the seed spread {spread:.3g}"
        parts.append(part)
        if gap <= spread:
            shortfalls.append(part)
    return f"{seeds}; " + ", ".join(parts), shortfalls


def seed_count(a: dict, b: dict, records: list[dict]) -> str:
    """How many seeds each side of a comparison has, for its line ("1 seed", "2 seeds", "2 vs 1 seeds"); a
    comparison that fails shows only this (a counter-example is one whatever the spread). Table 2's rows: ""."""
    if a["group"] == ("paper",):
        return ""
    n_a, n_b = seed_spreads(a, records, ())[0], seed_spreads(b, records, ())[0]
    return f"{n_a} seed{'s' if n_a > 1 else ''}" if n_a == n_b else f"{n_a} vs {n_b} seeds"


def judge(found: list[tuple[dict, dict]], records: list[dict], holds: Callable[[dict, dict], bool],
          metrics: tuple[str, ...]) -> Verdict:
    """Each pair holds, fails, or is not measurable: either run at chance, or a comparison that holds by no more
    than the spread between seeds in one of its `metrics`."""
    verdict = Verdict()
    for a, b in found:
        reasons = [reason for reason in (at_chance(a), at_chance(b)) if reason]
        line = f"{a['source']} vs {b['source']}: {errors(*metrics)(a, b)}"
        if reasons:
            verdict.not_measurable.append(f"{line} — " + "; ".join(reasons))
        elif not holds(a, b):
            seeds = seed_count(a, b, records)
            verdict.fails.append(line + (f" ({seeds})" if seeds else ""))
        else:
            note, shortfalls = against_seeds(a, b, records, metrics)
            line += f" ({note})" if note else ""
            if shortfalls:
                verdict.within_spread.append(f"{line} — " + "; ".join(shortfalls))
            else:
                verdict.holds.append(line)
    return verdict


def errors(*keys: str) -> Callable[[dict, dict], str]:
    return lambda a, b: ", ".join(f"{k} {a[k]:.3g} vs {b[k]:.3g}" for k in keys)


# ---------------------------------------------------------------------------------------------------
# The claims
# ---------------------------------------------------------------------------------------------------
def check_image_loss_vs_deepsim(records: list[dict], feature_key: str = "feature_error_pct") -> Verdict:
    """Table 2: 'Our image loss' has the lower image-space and the higher feature-space error."""
    return judge(pairs(records, "image-loss", "deepsim", feature_key), records,
                 lambda image_loss, deepsim: (image_loss["image_error_pct"] < deepsim["image_error_pct"]
                                              and image_loss[feature_key] > deepsim[feature_key]),
                 ("image_error_pct", feature_key))


def check_image_loss_is_blurrier(records: list[dict]) -> Verdict:
    """§1, Fig. 3: pixel losses blur. Blur is fine-scale power missing from the reconstructions: the image loss's
    keep less of the originals' power at periods ≤ 8 px than DeePSiM's, counted off G's up-sampling lattice so
    that the checkerboard of strided up-convolutions cannot pass for detail (`repro.evaluation.spectra`). Power
    alone does not say the details are right (noise has power too); that the reconstructions follow their inputs
    is the chance rule every pair is held to, and `blur:edges` reports how the edges agree."""
    return judge(pairs(records, "image-loss", "deepsim", "fine_power_pct"), records,
                 lambda image_loss, deepsim: deepsim["fine_power_pct"] > image_loss["fine_power_pct"],
                 ("fine_power_pct",))


def check_edges_agree_better(records: list[dict]) -> Verdict:
    """The blur claim read as agreement with the originals' edges: DeePSiM's gradient error below the image loss's.
    Kept to report, not to decide blur: the gradient error is an L2 distance after a linear map, so the image
    loss's optimum (the conditional mean given the code) minimises it, and a generator that draws the details the
    code leaves open, even from exactly the right distribution, scores √2 times the mean's residual
    (`repro.evaluation.metrics.gradient_error`). It can hold only where the code fixes the fine details and the
    image loss has not learnt them."""
    return judge(pairs(records, "image-loss", "deepsim", "gradient_error_pct"), records,
                 lambda image_loss, deepsim: deepsim["gradient_error_pct"] < image_loss["gradient_error_pct"],
                 ("gradient_error_pct",))


def check_mv_extremes(records: list[dict], feature_key: str = "feature_error_pct") -> Verdict:
    """M&V has the highest image-space and the lowest feature-space error among Table 2's methods."""
    found = [(mv, other) for mv in records for other in records if mv["method"] == "mahendran-vedaldi"
             and other["method"] != "mahendran-vedaldi" and other["method"] in TABLE2_METHODS
             and paper_comparator(other) and comparable(mv, other)
             and other.get(feature_key) is not None and mv.get(feature_key) is not None]
    return judge(found, records, lambda mv, other: (mv["image_error_pct"] > other["image_error_pct"]
                                                    and mv[feature_key] < other[feature_key]),
                 ("image_error_pct", feature_key))


def depth_of(record: dict) -> int | None:
    """Position of the inverted layer in its network: the encoder's tap order where recorded, else Table 2's."""
    if record.get("layer_depth") is not None:
        return record["layer_depth"]
    return LAYERS.index(record["layer"]) if record["layer"] in LAYERS else None


def check_depth(records: list[dict]) -> Verdict:
    """Image-space error grows with the depth of the inverted layer, per method, comparator, setting, steps and
    seed: each layer against the next deeper one of its series."""
    series = defaultdict(dict)
    for r in records:
        if depth_of(r) is not None:
            series[(r["method"], comparator_id(r), r["group"], r["step"], r.get("seed"))][depth_of(r)] = r
    found = []
    for by_depth in series.values():
        ordered = [by_depth[depth] for depth in sorted(by_depth)]
        found += list(zip(ordered, ordered[1:]))
    return judge(found, records, lambda shallow, deep: shallow["image_error_pct"] < deep["image_error_pct"],
                 ("image_error_pct",))


# The paper's criterion for each ablation ("better" = lower). Only the image-loss ablation has numbers
# (Table 2); the others are shown in Fig. 1 and described in words, so we measure what the words describe.
ABLATIONS = {
    "image-loss": ("feature_error_pct", "Table 2: 'Our image loss' vs 'AlexNet CONV5' at FC6, feature space"),
    "deepsim-no-feat": ("feature_error_pct", "Fig. 1(c): with image + adversarial loss 'the reconstructions do not "
                                             "correspond to actual objects originally contained in the image'"),
    "deepsim-no-adv": ("lpips", "Fig. 1(d): without the adversarial loss 'predictions look very noisy' "
                                "(visual only; LPIPS as the perceptual stand-in)"),
}
# Fig. 1(e): without the image loss the reconstructions are 'similar to the full model': within this many points
# (absolute %) in image and in feature space, both runs above chance.
SIMILAR_PCT = 10


def check_ablation(records: list[dict], ablation: str) -> Verdict:
    metric = ABLATIONS[ablation][0]
    return judge(pairs(records, "deepsim", ablation, metric), records,
                 lambda full, ablated: full[metric] < ablated[metric], (metric,))


def check_no_img_is_similar(records: list[dict]) -> Verdict:
    """'Similar to the full model': both errors within SIMILAR_PCT points, each by more than the seed spread
    (the margin is the distance to SIMILAR_PCT). Only the full run must be above chance for this to be
    measurable: an ablation that ignores its input while the full model does not is itself the dissimilarity."""
    keys = ("image_error_pct", "feature_error_pct")
    verdict = Verdict()
    for full, ablated in pairs(records, "deepsim", "deepsim-no-img", "feature_error_pct"):
        line = f"{full['source']} vs {ablated['source']}: " + errors(*keys)(full, ablated)
        if at_chance(full):
            verdict.not_measurable.append(f"{line} — {at_chance(full)}")
        elif at_chance(ablated):
            verdict.fails.append(f"{line} ({seed_count(full, ablated, records)}) — the ablation ignores its input: "
                                 f"{at_chance(ablated)}")
        elif not all(abs(full[k] - ablated[k]) <= SIMILAR_PCT for k in keys):
            verdict.fails.append(f"{line} ({seed_count(full, ablated, records)})")
        else:
            note, shortfalls = against_seeds(full, ablated, records, keys,
                                             margin=lambda a, b, k: SIMILAR_PCT - abs(a[k] - b[k]))
            line += f" ({note})"
            if shortfalls:
                verdict.within_spread.append(f"{line} — " + "; ".join(shortfalls))
            else:
                verdict.holds.append(line)
    return verdict


INDEPENDENT = "independent_feature_error_pct"
INDEPENDENT_LABEL = f"{INDEPENDENT_NET[0]}:{INDEPENDENT_NET[1]}, which no run uses as comparator"


@dataclass(frozen=True)
class Claim:
    key: str
    text: str                                    # the claim as checked
    check: Callable[[list[dict]], Verdict]
    methods: tuple[str, str]                     # whose runs it compares
    metric: str                                  # what the records must carry
    on_paper: bool = False                       # also checked on Table 2 (the paper makes it in numbers)


CLAIMS = [
    Claim("image-loss-vs-deepsim", "the image-loss baseline has lower image-space and higher feature-space error "
          "than DeePSiM (Table 2; feature space = the encoder's, which the full model's comparator shares)",
          check_image_loss_vs_deepsim, ("image-loss", "deepsim"), "feature_error_pct", on_paper=True),
    Claim("image-loss-vs-deepsim:independent", "the image-loss baseline has lower image-space and higher "
          f"feature-space error than DeePSiM, feature space = {INDEPENDENT_LABEL}",
          lambda r: check_image_loss_vs_deepsim(r, INDEPENDENT), ("image-loss", "deepsim"), INDEPENDENT),
    Claim("blur", "the image loss's reconstructions are blurrier than DeePSiM's: they keep less of the originals' "
          "fine-scale power, off G's up-sampling lattice (§1, Fig. 3: pixel losses blur)",
          check_image_loss_is_blurrier, ("image-loss", "deepsim"), "fine_power_pct"),
    Claim("blur:edges", "DeePSiM's reconstructions agree better with the originals' edges than the image loss's "
          "(lower gradient error; a reading a sharp generator loses to the conditional mean by construction)",
          check_edges_agree_better, ("image-loss", "deepsim"), "gradient_error_pct"),
    Claim("mv-extremes", "Mahendran & Vedaldi has the highest image-space and the lowest feature-space error "
          "(feature space = the encoder's, which M&V optimises directly)", check_mv_extremes,
          ("mahendran-vedaldi", "deepsim"), "feature_error_pct", on_paper=True),
    Claim("mv-extremes:independent", "Mahendran & Vedaldi has the highest image-space and the lowest "
          f"feature-space error, feature space = {INDEPENDENT_LABEL}",
          lambda r: check_mv_extremes(r, INDEPENDENT), ("mahendran-vedaldi", "deepsim"), INDEPENDENT),
    Claim("depth", "image-space error grows with the depth of the inverted layer (Table 2, each row left to right)",
          check_depth, ("deepsim", "deepsim"), "image_error_pct", on_paper=True),
    *[Claim(f"ablation:{name}", f"the full loss beats {name} on {metric} ({why})",
            lambda r, name=name: check_ablation(r, name), ("deepsim", name), metric, on_paper=name == "image-loss")
      for name, (metric, why) in ABLATIONS.items()],
    Claim("no-img-similar", f"the model without image loss is similar to the full model (Fig. 1(e); within "
          f"{SIMILAR_PCT} points in image and feature space)", check_no_img_is_similar, ("deepsim", "deepsim-no-img"),
          "feature_error_pct"),
]
CLAIMS_BY_KEY = {claim.key: claim for claim in CLAIMS}
ALWAYS_MEASURED = ("image_error_pct", "feature_error_pct")  # in every metrics.json since the first


def assess(claim: Claim, records: list[dict], scale: str | None = None) -> tuple[str, list[str]]:
    """(status, lines): status is holds, fails, not measurable, not measured or not covered; with `scale`, on the
    records of that scale only (`scale_of`), as the tests and the report judge committed runs."""
    if scale is not None:
        records = [r for r in records if r.get("scale") == scale]
    verdict = claim.check(records)
    if verdict.fails:
        return "fails", verdict.fails
    if verdict.within_spread:  # one pair that holds by no more than the seeds differ: the claim is not shown
        return "not measurable", verdict.within_spread + verdict.holds + verdict.not_measurable
    if verdict.holds:
        return "holds", verdict.holds + verdict.not_measurable
    if verdict.not_measurable:
        return "not measurable", verdict.not_measurable
    unmeasured = pairs(records, *claim.methods) if claim.metric not in ALWAYS_MEASURED else []
    if unmeasured:
        return "not measured", [f"{len(unmeasured)} comparable pair(s) committed, evaluated before "
                                f"{claim.metric!r} was measured; their checkpoints were not published"]
    return "not covered", []
