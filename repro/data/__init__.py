"""The data stage: image folders → pipeline images (B, 3, R, R) RGB, prepared the way Caffe prepared ILSVRC.

The first stage of the data flow, and it knows nothing of the later ones (nets, losses, the loop). Its
modules, each using only those above it:

    sources    which images a source names: the folder walked once into Caffe's train.txt index, list
               files, shared assets by name; the listing's sha256 for provenance
    caffe      one image: decode, warp to a square (256 at R=227), crop (random + mirror, or central)
    datasets   ImageFolder / EncodedFolder items and the caches of warped images
    loaders    the sampler (per-sample crop seeds, rank shards), DataLoaders, the training stream,
               evaluation images, GPU decoding
    prewarp    `python -m repro.prewarp SRC OUT`: the warped set written once, offline

Network-specific preprocessing (BGR, mean, normalisation) is *not* done here: it belongs to each network's
`transform`. At ImageNet scale the listing, decoding and memory are measured in results/scale.md.

The names below are re-exported so that `from repro.data import load_images` keeps working; code inside
the package imports from the module that defines a name.
"""
from __future__ import annotations

from repro.data.caffe import (UNREADABLE, Crop, crop_uint8, decode_rgb, draw_crop, load_warped, to_tensor,
                              warp_like_caffe, warp_size)
from repro.data.datasets import DEFAULT_CACHE_MB, EncodedFolder, ImageFolder, SharedCache
from repro.data.loaders import (GpuDecoded, SeededSampler, default_workers, infinite_batches, load_images,
                                make_loader, require_one_batch, training_loader)
from repro.data.sources import (IMAGE_SUFFIXES, DataError, Listing, cache_dir, index_path, index_text,
                                list_images, listing, listing_sha256, resolve_folder, resolve_source,
                                scan_images)

__all__ = [
    "IMAGE_SUFFIXES", "DataError", "Listing", "cache_dir", "index_path", "index_text", "list_images", "listing",
    "listing_sha256", "resolve_folder", "resolve_source", "scan_images",
    "UNREADABLE", "Crop", "crop_uint8", "decode_rgb", "draw_crop", "load_warped", "to_tensor", "warp_like_caffe",
    "warp_size",
    "DEFAULT_CACHE_MB", "EncodedFolder", "ImageFolder", "SharedCache",
    "GpuDecoded", "SeededSampler", "default_workers", "infinite_batches", "load_images", "make_loader",
    "require_one_batch", "training_loader",
]
