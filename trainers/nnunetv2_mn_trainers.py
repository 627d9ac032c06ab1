"""Shim for nnU-Net's external trainer lookup: re-exports every trainer of nnunetv2_mn."""
from nnunetv2_mn.training.variants import *  # noqa: F401,F403
