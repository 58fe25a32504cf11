"""The λ rule: every λ at a reduced resolution R from the paper's at 227 px, keeping the balance of the loss terms
(the rule and its measured feature/image ratios are said in full below). Torch-free: configs and presets are
built from it.
"""
from __future__ import annotations

from repro.errors import ConfigError

# The paper's λ at 227 px (§3.2, §4.2): the defaults of `repro.config.Config`.
PAPER_LAMBDAS = {"lambda_feat": 0.01, "lambda_adv": 100.0, "lambda_img": 2e-6, "lambda_kl": 20.0}

# One rule for every λ at reduced resolution R: keep the balance of terms at 227 px, with the image term as the
# anchor (λ_img as in the paper). Said plainly: the balance kept is that of the paper's λ applied to the
# *torchvision AlexNet's* pool5 at 227 px, not CaffeNet's. CaffeNet's own feature/image ratio cannot be measured
# here (its weights are not obtainable), and networks differ widely in it (SqueezeNet's fire9, a Caffe 0–255
# network, is ~4000× AlexNet's: repro.comparators), so "the paper's balance" is exact only up to that unknown. The paper's λ_adv = 100 "compensates for the fact that both image and
# feature loss include summation over many spatial locations" (§3.2); at R each term keeps its size relative to
# the image term:
#     λ_T(R) = λ_T · s_img(R) / s_T(R),   s_X(R) = how much term X shrinks from 227 px to R on the same images.
# - image term: a sum over pixels, s_img = (R/227)² (counted; measured on real image pairs: 0.170 at 96 px vs
#   0.179 counted, 0.074 vs 0.079 at 64 px);
# - per-sample terms, s = 1: L_adv (D ends in one 2-way softmax per image, after its spatial pooling, so D's
#   smaller map at R changes nothing in the loss's size) and L_KL (one latent per image), hence
#   λ_adv(R) = 100·(R/227)² and λ_KL(R) = 20·(R/227)² (at 64 px the paper's 20 would weigh 12.6× more than the
#   paper's balance: the likely cause of the DeePSiM VAE's posterior collapse, results/autoencoders);
# - the feature term, a sum over the comparator tap's cells: counting them (AlexNet pool5: 36 at 227 px, 4 at
#   96, 1 at 64) would predict s = 1/9 at 96, but fewer cells each differ more between images, so s_feat is
#   measured: λ_feat(R) = 0.01 · ratio(227) / ratio(R), ratio = Σ‖C(a) − C(b)‖² / Σ‖255·(a − b)‖² over pairs of
#   different real images (`repro.comparators.Comparator.feature_image_ratio`). The ratios below: the first 256
#   images of imagenet-1k-256, each paired with the next, measured with
#   python -c "from repro.comparators import build_comparator as b; from repro.data import list_images, load_images;
#   from repro.assets import asset_folder as a; f = list_images(a('imagenet-1k-256'))[:256];
#   print({r: b('alexnet', 'pool5', r).feature_image_ratio(load_images(f, r)) for r in (227, 96, 64)})"
#   (2 shared CPU cores, 24 s; tests/test_lambda_rule.py re-measures them on 48 images).
# The reduced presets invert with the pretrained AlexNet's pool5 as comparator; other comparators need their
# ratios measured first (and their feature scale, repro.comparators.FEATURE_IMAGE_RATIO, for the comparator).
# Keys "R@227": images at R that the comparator sees resized to 227 px (`comparator_resolution=227`, protocol
# CONV5*: its pool5 keeps the paper's 6×6 grid), measured the same way with
#   b('alexnet', 'pool5', r, input_size=227).feature_image_ratio(load_images(f, r)) for r in (96, 64, 128)
# (2 shared CPU cores, 38 s with the 227 px line). The image term shrinks with R² while the 6×6 feature map does
# not, so the ratio rises (×2.7 at 96) and the rule lowers λ_feat to keep the paper's balance.
FEATURE_IMAGE_RATIO_AT = {("alexnet", "pool5"): {227: 5.83e-05, 96: 6.89e-05, 64: 4.04e-05,
                                                 "96@227": 1.587e-04, "64@227": 2.555e-04, "128@227": 1.098e-04}}


def ratio_key(resolution: int, comparator_resolution: int = 0) -> int | str:
    """Key of `FEATURE_IMAGE_RATIO_AT` for images at `resolution` seen by the comparator at `comparator_resolution`."""
    if comparator_resolution in (0, resolution):
        return resolution
    return f"{resolution}@{comparator_resolution}"


def reduced_lambdas(resolution: int, comparator: tuple[str, str] = ("alexnet", "pool5"),
                    comparator_resolution: int = 0) -> dict[str, float]:
    """λ_feat, λ_adv and λ_KL at `resolution` by the rule above (λ_img stays the paper's); the comparator sees
    the images resized to `comparator_resolution` when it is given (0: at `resolution`)."""
    ratios = FEATURE_IMAGE_RATIO_AT.get(comparator, {})
    key = ratio_key(resolution, comparator_resolution)
    if key not in ratios or 227 not in ratios:
        raise ConfigError(f"no measured feature/image ratio of {comparator[0]}:{comparator[1]} at {key} px "
                          "and 227 px: measure them (Comparator.feature_image_ratio) into FEATURE_IMAGE_RATIO_AT")
    area = (resolution / 227) ** 2
    return {"lambda_feat": round(PAPER_LAMBDAS["lambda_feat"] * ratios[227] / ratios[key], 5),
            "lambda_adv": round(PAPER_LAMBDAS["lambda_adv"] * area, 2),
            "lambda_kl": round(PAPER_LAMBDAS["lambda_kl"] * area, 3)}


def reduced_lambda_adv(resolution: int) -> float:
    return reduced_lambdas(resolution)["lambda_adv"]
