"""nnunetv2-mn: M&N semi-supervised 3D segmentation (Yeung et al. 2025) inside nnU-Net v2.

Kept import-light on purpose: `nnunetv2_mn_hook` imports this package at interpreter start.
"""
__version__ = "0.1.0"
