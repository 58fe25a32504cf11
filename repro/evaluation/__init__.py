"""The evaluation stage: a trained model's reconstructions measured, drawn and tabulated.

After the loop in the data flow: it imports the stages before it (data, nets, comparators, runs, the grid
writer `repro.grids`) and nothing of reporting or of the command-line tools; nothing before it imports it.
Its modules, each using only those above it:

    metrics     the paper's normalised error, PSNR, gradient error, LPIPS (SSIM / MS-SSIM from `repro.ssim`);
                `METRICS`, the registry of every reported number's title, format and better side
    tables      the one Markdown table writer; metric columns as the registry says
    scores      the one measurement of any model kind on evaluation images: errors, image metrics, the
                feature error in an independent network, nearest-neighbour identification and its chance rule
    baselines   Mahendran & Vedaldi's per-image optimisation (Table 2's row M & V)
    figures     runs side by side on the same images; re-encoding (Fig. 5), interpolation (Fig. 7), nearest
                neighbours; a VAE's samples (Fig. 8)
    evaluate    one run measured: metrics.json, metrics.md and its figures (`python -m repro.evaluate`)
    collapse    has an autoencoder / VAE collapsed to one image (`python -m repro.collapse`)
    colour      do reconstructions keep green (`python -m repro.colour_check`)
    spectra     fine-scale power kept (blur) and its excess on G's up-sampling lattice (`python -m repro.spectra`)

The commands are thin modules at the top of `repro` (`repro/evaluate.py`, `figures.py`, `collapse.py`,
`colour_check.py`, `spectra.py`, `sample.py`): argument parsing and `main()` only.
"""
