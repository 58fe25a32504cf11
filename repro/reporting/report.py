"""`results/README.md` rendered from what is committed under `results/` (`render`, behind `python -m repro.report`).

Nothing here measures; it only arranges committed records, so every number on the page points to the file
(and through it to the command, commit and run) that produced it:
- Table 2: the paper's cells (`results/paper_table2.json`) beside ours (every `results/**/eval/metrics.json`,
  written by `python -m repro.evaluate`), each of our cells linked to its metrics file, protocol listed, and
  marked † where the run finds its own originals no better than the chance rule allows
  (`repro.evaluation.scores.identification`): such a cell is not compared with others;
- the CONV5* runs (`results/conv5star*/<run>/eval/metrics.json`: the paper's 256×6×6 pool5 code from 96 px
  images): each run and seed, the mean ± spread over seeds per method, and the protocol beside the paper's;
- the paper's claims at each scale (`claims.scale_of`, CONV5* first), each as holds / fails / not
  measurable at this scale / not measured / not covered, with the comparisons behind it (`claims`, the rules
  `tests/test_paper_numbers.py` asserts);
- the published runs (`results/<preset>/<run>/provenance.json`, `python -m repro.publish`);
- side-by-side figures (`results/figures/*.webp` + their `.json`, `python -m repro.figures`);
- the autoencoder / VAE comparison (`results/autoencoders/*/metrics.json`, `python -m repro.compare_autoencoders`),
  with which loss each perceptual metric prefers, read off the table;
- λ searches (`results/tune/*/best.json`, `python -m tune.search`), performance (`results/perf.md`) and
  reliability (`results/reliability.md`) when present.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from repro.assets import REPO_ROOT
from repro.evaluation.metrics import AUTOENCODER_METRICS, METRICS
from repro.evaluation.scores import IDENTIFICATION_FACTOR, identification
from repro.evaluation.tables import markdown_table, metric_cells, metric_headings
from repro.grids import FIGURE_SUFFIX, existing_figure
from repro.reporting import claims, contradicted
from repro.reporting.claims import scale_of, seed_of

RESULTS = REPO_ROOT / "results"
ROW_NAMES = {"mahendran-vedaldi": "M & V", "image-loss": "Our image loss", "deepsim": "DeePSiM (ours)",
             "deepsim-no-adv": "DeePSiM − adv", "deepsim-no-feat": "DeePSiM − feat", "deepsim-no-img": "DeePSiM − img"}


def _load(paths: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    return [(path, json.loads(path.read_text())) for path in paths]


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def at_chance(result: dict[str, Any], n_images: int) -> bool:
    """True when a result's reconstructions do not find their own originals well above chance (records that
    predate the nearest-neighbour rates are not marked)."""
    if result.get("nn_own_image_pct") is None or result.get("nn_own_feature_pct") is None:
        return False
    return not identification(result, n_images)["above_chance"]


# ---------------------------------------------------------------------------------------------------
# Table 2
# ---------------------------------------------------------------------------------------------------
def table2(root: Path) -> list[str]:
    paper = json.loads((root / "paper_table2.json").read_text())
    columns, taps = paper["columns"], paper["column_taps"]
    printed = [[row["paper_label"], *(f"{_pct((c or {}).get('image'))}/{_pct((c or {}).get('feature'))}"
                                      for c in (row["cells"].get(col) for col in columns))] for row in paper["rows"]]
    lines = ["## Table 2: normalised inversion error (%), image space / feature space", "",
             "### The paper (as printed)", "", *markdown_table(["method", *columns], printed)]
    lines += ["", "### Ours (measured; each cell links to its metrics file)", ""]
    records = _load(sorted(root.glob("*/*/eval/metrics.json")))
    table: dict[tuple[str, str], tuple[str, Path]] = {}
    for path, record in records:
        column = next((c for c, t in taps.items() if t == record["layer"]), record["layer"])
        proto = record["protocol"]
        for result in record["results"]:
            training = "" if result["step"] is None else f", {result['step']} steps"
            seed = f", seed {proto['seed']}" if proto.get("seed") is not None else ""  # recorded since CONV5*
            comparator = f", C = {result['comparator']}" if result.get("comparator") else ""
            name = (f"{ROW_NAMES.get(result['method'], result['method'])} [{proto['encoder']}, "
                    f"{scale_of(proto)}{training}{seed}{comparator}]")
            mark = " †" if at_chance(result, record["provenance"]["n_images"]) else ""
            table[(name, column)] = (f"{result['image_error_pct']:.0f}/{result['feature_error_pct']:.0f}{mark}", path)
    if not table:
        return lines + ["No evaluated run is committed yet.", ""]
    names = sorted({name for name, _ in table})
    used = {column for _, column in table}
    cols = [c for c in columns if c in used] + sorted(used - set(columns))
    lines += markdown_table(["method [encoder, resolution, training, comparator]", *cols],
                            ([name, *(f"[{table[name, c][0]}]({_rel(table[name, c][1], root)})" if (name, c) in table
                                      else "-" for c in cols)] for name in names))
    if any("†" in cell for cell, _ in table.values()):
        lines += ["", f"† the run's reconstructions find their own original (nearest evaluation image, in image or "
                  f"feature space) less than {IDENTIFICATION_FACTOR} × chance (chance = 1/n for n evaluation images): it "
                  "outputs nearly the same image whatever its input, so its errors measure how far that image lies from "
                  "the data, not what the layer keeps, and it is not compared with other runs (\"not measurable at this "
                  "scale\")."]
    lines += ["", "Protocol of each measured run:", ""]
    for path, record in records:
        prov, proto = record["provenance"], record["protocol"]
        lines.append(f"- [{_rel(path, root)}]({_rel(path, root)}): preset `{record['preset']}`, layer "
                     f"`{record['layer']}`, checkpoint step {prov['step']}, {prov['n_images']} images, {prov['device']}; "
                     f"differs from the paper by: {'; '.join(proto['differences_from_paper']) or 'nothing'}.")
    lines += ["", "Cells no committed run covers under the paper's protocol need the original CaffeNet weights "
              "(not obtainable here) and a GPU for 227 px training. `pytest tests/test_paper_numbers.py` checks the "
              "paper's claims on these runs (generators compared at equal training steps) and says which are "
              "skipped and why.", ""]
    return lines


# ---------------------------------------------------------------------------------------------------
# CONV5*
# ---------------------------------------------------------------------------------------------------
# What each CONV5* run is shown with: errors, whether it finds its own originals, LPIPS, edges, fine power kept off
# G's lattice (blur) and the lattice's excess, the independent net
STAR_METRICS = ("image_error_pct", "feature_error_pct", "nn_own_image_pct", "nn_own_feature_pct", "lpips",
                "gradient_error_pct", "fine_power_pct", "lattice_excess", "independent_feature_error_pct")


def _shape(shape: list[int]) -> str:
    return f"{'×'.join(map(str, shape))} = {math.prod(shape):,} values"


def star_protocol(path: Path, record: dict[str, Any]) -> str:
    """One run's protocol in a line: its code beside the paper's, R and how the encoder saw the images, the training (data, batch, width, steps scheduled, from the differences evaluate recorded) and the
    evaluation images."""
    proto = record["protocol"]
    code, paper = proto.get("code_shape") or [], proto.get("paper_code_shape") or []
    parts = [f"code {_shape(code)}" if code else "code shape not recorded"]
    if code and paper:
        parts[0] += f" (the paper's {_shape(paper)}: {100 * math.prod(code) / math.prod(paper):.0f} %)"
    parts.append(f"R = {proto['resolution']} px (encoder at {proto.get('encoder_resolution') or proto['resolution']} px)")
    parts += [d for d in proto.get("differences_from_paper", []) if d.startswith("trained on")]
    parts.append(f"evaluated on {proto['n_images']} images of {proto['eval_data']!r}")
    return "; ".join(parts)


def conv5star(root: Path) -> list[str]:
    """The CONV5* runs (`conv5star*/<run>/eval/metrics.json`; `conv5star/candidates/*`, one folder deeper, are the
    probes that chose the protocol, linked, not tabled): each run, then mean ± spread over seeds per method."""
    records = _load(sorted(root.glob("conv5star*/*/eval/metrics.json")))
    candidates = root / "conv5star" / "candidates" / "README.md"
    if not records and not candidates.exists():
        return []
    lines = ["## CONV5*: the paper's CONV5 code at a CPU budget", "",
             "Protocol CONV5* (`repro.config`, presets `conv5star*`): each 96 px image is resized to 227 px for the "
             "encoder (and for the comparator of the feature loss), so the inverted code is the paper's pool5, "
             "256×6×6, where pool5 of the 96 px image itself is 256×2×2 (the 96 px runs above). Claims are judged at this scale apart from the 96 px runs."]
    if candidates.exists():
        lines[-1] += f" How it was chosen: [{_rel(candidates, root)}]({_rel(candidates, root)})."
    lines.append("")
    if not records:
        return lines + ["No CONV5* run is committed yet (`results/conv5star*/<run>/eval/metrics.json`, "
                        "`python -m repro.evaluate` then `python -m repro.publish`).", ""]
    protocols: dict[str, list[str]] = {}
    rows, by_method = [], {}
    for path, record in records:
        run = _rel(path.parents[1], root)
        protocols.setdefault(star_protocol(path, record), []).append(run)
        seed = seed_of(path, record["protocol"])
        figure = existing_figure(path.parent / "reconstructions")
        for result in record["results"]:
            rows.append([f"[{run}]({_rel(path, root)})", result["method"], "–" if seed is None else str(seed),
                         "–" if result["step"] is None else str(result["step"]), *metric_cells(result, STAR_METRICS),
                         f"[figure]({_rel(figure, root)})" if figure else "–"])
            by_method.setdefault((result["method"], result.get("comparator"), result["step"]), []).append((seed, result))
    if len(protocols) == 1:
        lines += [f"Protocol: {next(iter(protocols))}.", ""]
    else:
        lines += ["Protocol of each run:", "", *(f"- {', '.join(runs)}: {text}." for text, runs in protocols.items()), ""]
    lines += ["Each run (its row links to its metrics file; NN = own: how often a reconstruction's nearest "
              "evaluation image is its own original, chance 1/n):", "",
              *markdown_table(["run", "method", "seed", "step", *metric_headings(STAR_METRICS), "reconstructions"], rows),
              "", "Over seeds: mean ± spread (max − min over the seeds, the spread `repro.reporting.claims` holds "
              "each comparison's margin against).", ""]
    summary = []
    for (method, comparator, step), seeded in sorted(by_method.items(), key=lambda item: str(item[0])):
        cells = []
        for key in STAR_METRICS:
            values = [result[key] for _, result in seeded if result.get(key) is not None]
            cell = METRICS[key].cell(sum(values) / len(values) if values else None)
            cells.append(f"{cell} ± {METRICS[key].cell(max(values) - min(values))}" if len(values) > 1 else cell)
        seeds = ", ".join("–" if seed is None else str(seed) for seed, _ in seeded)
        summary.append([method + (f" (C = {comparator})" if comparator else ""), "–" if step is None else str(step),
                        seeds, *cells])
    return lines + markdown_table(["method", "step", "seeds", *metric_headings(STAR_METRICS)], summary) + [""]


# ---------------------------------------------------------------------------------------------------
# Claims
# ---------------------------------------------------------------------------------------------------
def claims_section(root: Path) -> list[str]:
    records = claims.measured_records(root)
    if not records:
        return []
    lines = ["## The paper's claims on these runs", "",
             "Judged by `repro.reporting.claims` (asserted by `tests/test_paper_numbers.py`) at each scale apart "
             "(how large the images were and how the encoder saw them): pairs of runs with the same images, encoder, "
             "layer, resolution, encoder resolution, training steps and seed; a pair counts only when both runs find "
             f"their own originals at least {IDENTIFICATION_FACTOR} × chance, else it is *not measurable at this scale*, and "
             "a comparison that holds counts only when, in every metric it compares, its margin exceeds the spread "
             "between seeds (max − min over the seeds of each side; one seed: no spread, the line says \"1 seed\"). "
             "One measurable counter-example fails a claim.", ""]
    for scale in claims.scales(records):
        rows = []
        for claim in claims.CLAIMS:
            status, found = claims.assess(claim, records, scale)
            expected = contradicted.CONTRADICTED.get((claim.key, scale))
            shown = f"**{status}**" + (f" (expected at this scale: {expected})" if expected and status == "fails" else "")
            rows.append([claim.text, shown, "<br>".join(line.replace("|", "\\|") for line in found) or "–"])
        lines += [f"### At {scale}", "", *markdown_table(["claim", "on these runs", "comparisons"], rows), ""]
    return lines


# ---------------------------------------------------------------------------------------------------
# Runs and figures
# ---------------------------------------------------------------------------------------------------
def runs(root: Path) -> list[str]:
    records = _load(sorted(root.glob("*/*/provenance.json")))
    if not records:
        return []
    lines = ["## Published runs", "", "Each folder holds provenance.json (config, command, commit, data and "
             "weights sha256, device, wall time), stats.jsonl / metrics.csv and grids (`python -m repro.publish`).", ""]
    rows = []
    for path, prov in records:
        if "config" not in prov:  # not a training run (e.g. results/synthesis: a comparison's own record)
            continue
        folder = path.parent
        stats = folder / "stats.jsonl"
        step = json.loads(stats.read_text().splitlines()[-1])["step"] if stats.exists() else "?"
        latest = existing_figure(folder / "grid-latest")
        grid = f"[grid]({_rel(latest, root)})" if latest else "-"
        rows.append([f"[{_rel(folder, root)}]({_rel(folder, root)})", f"`{prov['config']['preset']}`", str(step),
                     f"{prov.get('wall_time_s', 0) / 60:.1f} min", prov["device"], prov.get("launcher", "?"), grid])
    return lines + markdown_table(["run", "preset", "steps", "wall time", "device", "launcher", "last grid"], rows) + [""]


def figures(root: Path) -> list[str]:
    records = _load(sorted((root / "figures").glob("*.json")))
    if not records:
        return []
    lines = ["## Side by side", "", "The same evaluation images through each run (`python -m repro.figures`); rows "
             "labelled preset / method / checkpoint step.", ""]
    for path, record in records:
        rows = ", ".join(f"`{r['preset']}` ({r['method']}, step {r['step']})" for r in record["rows"])
        lines += [f"**{path.stem}**: {rows}. Command: `{record['command']}` at commit `{record['commit'][:12]}`.", "",
                  f"![{path.stem}]({_rel(existing_figure(path) or path.with_suffix(FIGURE_SUFFIX), root)})", ""]
        lines += figure_metrics(root, record["rows"])
    return lines


# The metrics (METRICS) shown for each row of a side-by-side figure, where its evaluation is published
FIGURE_METRICS = ("image_error_pct", "feature_error_pct", "lpips", "gradient_error_pct", "sharpness_pct",
                  "fine_power_pct")


def figure_metrics(root: Path, rows: list[dict[str, Any]]) -> list[str]:
    """The published evaluation of each row's run at the row's step (256 images, not only the 8 shown), so the
    picture and the numbers are read together; rows whose run was evaluated at another step are left out."""
    out = []
    for row in rows:
        path = root / row["preset"] / Path(row["run"]).name / "eval" / "metrics.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        result = next((r for r in data["results"] if r["method"] == row["method"]), None)
        if result is None or data["provenance"]["step"] != row["step"]:
            continue
        out.append([f"[{row['preset']}]({_rel(path, root)})", row["method"], str(row["step"]),
                    *metric_cells(result, FIGURE_METRICS)])
    if not out:
        return []
    return [*markdown_table(["run", "method", "step", *metric_headings(FIGURE_METRICS)], out), ""]


# ---------------------------------------------------------------------------------------------------
# Autoencoders, λ search, performance, reliability
# ---------------------------------------------------------------------------------------------------
def preferred(results: dict[str, dict[str, Any]], names: list[str]) -> list[str]:
    """For each metric, the model it ranks best among `names` (read off the numbers, nothing typed in)."""
    out = []
    for key in AUTOENCODER_METRICS:
        scored = [(results[n][key], n) for n in names if results[n].get(key) is not None]
        if scored:
            value, best = METRICS[key].best(scored)
            out.append(f"{METRICS[key].title} prefers **{best}**")
    return out


def autoencoders(root: Path) -> list[str]:
    records = _load(sorted((root / "autoencoders").glob("*/metrics.json")))
    if not records:
        return []
    lines = ["## Autoencoders and VAEs: which loss do the perceptual metrics prefer?", "",
             "Ridgeway, Snell et al. train autoencoders with MS-SSIM against pixel losses and ask which reconstructions "
             "perceptual judgements prefer; DeePSiM's first version compares its loss the same way. One architecture "
             "(`repro.autoencoders`), the losses below, held-out images (`python -m repro.compare_autoencoders`).", ""]
    for path, record in records:
        results, prov = record["results"], record["provenance"]
        ae = [n for n, r in results.items() if r.get("model") == "autoencoder"]
        vae = [n for n, r in results.items() if r.get("model") == "vae"]
        lines += [f"### [{_rel(path.parent, root)}]({_rel(path.parent / 'metrics.md', root)})", "",
                  f"{prov['resolution']} px, {prov['steps']} steps per model, {prov['n_eval']} held-out images, "
                  f"{prov['device']}, commit `{prov['commit'][:12]}`.", "",
                  *markdown_table(["model", *metric_headings(AUTOENCODER_METRICS, arrow=True)],
                                  ([name, *metric_cells(result, AUTOENCODER_METRICS)]
                                   for name, result in results.items())), ""]
        for label, names in (("Autoencoders", ae), ("VAEs", vae)):
            if len(names) > 1:
                lines.append(f"- {label}: " + "; ".join(preferred(results, names)) + ".")
        figure = existing_figure(path.parent / "reconstructions") or path.parent / f"reconstructions{FIGURE_SUFFIX}"
        lines += ["", f"![reconstructions]({_rel(figure, root)})", ""]
        for name, result in results.items():
            if "samples" in result:
                lines += [f"Samples of {name}:", "", f"![samples of {name}]({_rel(path.parent / result['samples'], root)})", ""]
        beside = [(p, r) for p, r in _load(sorted(path.parent.glob("*.json"))) if isinstance(r, dict)]
        lines += collapse_tables(beside, root)
        lines += probe_tables(beside, root)
        notes = sorted(path.parent.glob("**/NOTE.md"))
        if notes:
            lines += ["Notes: " + ", ".join(f"[{_rel(n, root)}]({_rel(n, root)})" for n in notes) + ".", ""]
    return lines


def probe_tables(beside: list[tuple[Path, dict[str, Any]]], root: Path) -> list[str]:
    """Every `python -m repro.vae_probe --out` record among those beside an autoencoder comparison: the VAE
    encoder over its first iterations, and the KL budget that the λ give it."""
    lines = []
    for path, record in beside:
        if "kl_budget" not in record:
            continue
        lines += [f"VAE encoder over its first iterations ([{_rel(path, root)}]({_rel(path, root)}), "
                  f"`{record.get('command', '')}`): pool5 alive = fraction of the trunk's pool5 ReLUs > 0; "
                  "μ spread = μ's standard deviation over images.", "",
                  *markdown_table(["λ_KL", "trunk", "iterations", "pool5 alive (%)", "μ spread"],
                                  ([f"{r['lambda_kl']:g}", "fine-tuned" if r["fine_tune_trunk"] else "held",
                                    f"{r['states'][0]['step']} → {r['states'][-1]['step']}",
                                    f"{100 * r['states'][0]['pool5_alive']:.1f} → {100 * r['states'][-1]['pool5_alive']:.1f}",
                                    f"{r['states'][0]['mu_spread']:.3f} → {r['states'][-1]['mu_spread']:.3f}"]
                                   for r in record["records"])), "",
                  "KL budget: the DeePSiM terms of a blind reconstruction over λ_KL, the most KL (nats per image) that "
                  "perfect reconstructions could pay for.", "",
                  *markdown_table(["resolution", "λ_feat", "λ_KL", "mean image: cost", "nats", "another image: cost",
                                   "nats"],
                                  ([f"{b['resolution']} px", f"{b['lambda_feat']:g}", f"{b['lambda_kl']:g}",
                                    f"{b['mean_image_cost']:.1f}", f"{b['mean_image_nats']:.1f}",
                                    f"{b['other_image_cost']:.1f}", f"{b['other_image_nats']:.1f}"]
                                   for b in record["kl_budget"])), ""]
    return lines


def collapse_tables(beside: list[tuple[Path, dict[str, Any]]], root: Path) -> list[str]:
    """Every `python -m repro.collapse --out` record among those beside an autoencoder comparison: has a model
    collapsed to one image? (metrics of a collapsed model measure that one image, not what the loss prefers)"""
    lines = []
    for path, record in beside:
        rows = record.get("records")
        if not rows or "collapsed" not in rows[0]:
            continue
        lines += [f"Collapse ([{_rel(path, root)}]({_rel(path, root)}), `{record.get('command', '')}`): "
                  f"collapsed = reconstructions find their own original below {record['identification_factor']} × "
                  f"chance, or reconstructions / samples spread less than {record['min_spread']}.", "",
                  *markdown_table(["run", "model", "loss", "λ_KL", "step", "NN = own (%)", "recon spread",
                                   "sample spread", "collapsed"],
                                  (["/".join(Path(r["run"]).parts[-2:]), r["model"], r["recon_loss"],
                                    "–" if r["lambda_kl"] is None else f"{r['lambda_kl']:g}", str(r["step"]),
                                    f"{r['nn_own_image_pct']:.1f}", f"{r['recon_spread']:.3f}",
                                    "–" if r["sample_spread"] is None else f"{r['sample_spread']:.3f}",
                                    "**yes**" if r["collapsed"] else "no"] for r in rows)), ""]
    return lines


def searches(root: Path) -> list[str]:
    records = _load(sorted((root / "tune").glob("*/best.json")))
    if not records:
        return []
    lines = ["## λ searches (Ray Tune)", ""]
    for path, record in records:
        best = record.get("best") or {}
        lam = ", ".join(f"{k} = {best[k]:.3g} (paper {v:g})" for k, v in record["paper_lambdas"].items() if k in best)
        lines += [f"- [{_rel(path.parent, root)}]({_rel(path.parent / 'results.md', root)}): target "
                  f"{record['target']['label']}; best trial {best.get('trial', '–')} with objective "
                  f"{best.get('objective', float('nan')):.3f}: {lam}."]
    return lines + [""]


def pointers(root: Path) -> list[str]:
    lines = []
    for name, title in (("perf.md", "Performance"), ("reliability.md", "Reliability")):
        if (root / name).exists():
            first = (root / name).read_text().splitlines()[0].lstrip("# ")
            lines += [f"## {title}", "", f"[{name}]({name}): {first}.", ""]
    return lines


def render(root: Path = RESULTS) -> str:
    lines = ["# Results", "", "Generated by `python -m repro.report` from the committed records under `results/`; "
             "do not edit by hand. Every number links to the file that holds it, and that file records the command, "
             "commit, data and weights sha256, device and wall time of the run that produced it.", ""]
    for section in (table2, conv5star, claims_section, runs, figures, autoencoders, searches, pointers):
        lines += section(root)
    return "\n".join(lines)
