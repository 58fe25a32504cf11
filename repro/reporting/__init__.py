"""The reporting stage: committed records turned into verdicts and pages; runs copied into `results/`.

The last stage of the data flow: it may import evaluation (metric registry, tables, the chance rule) and the
stages before it; nothing else in `repro` imports it. Nothing here measures. Its modules:

    claims            the paper's claims as rules over measured records, judged per scale against the spread
                      between seeds
    contradicted      the (claim, scale)s committed runs contradict, with why: the tests' strict expected failures
    report            `results/README.md` rendered from what is committed (`python -m repro.report`)
    compress_figures  older PNG / JPEG figures re-encoded as WebP, references rewritten
                      (`python -m repro.compress_figures`)
    publish           a run's small artefacts copied into `results/` (`python -m repro.publish`)

The commands are thin modules at the top of `repro` (`repro/report.py`, `publish.py`, `compress_figures.py`).
"""
