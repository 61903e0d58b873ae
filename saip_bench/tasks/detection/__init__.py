"""Shared pieces of the box / instance tasks (CrowdHuman, Fashionpedia): a simple feature pyramid on any
backbone, torchvision detectors driven from precomputed backbone maps, image/box resizing helpers."""
