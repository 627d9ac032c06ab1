"""nnunetv2-mn: M&N semi-supervised 3D segmentation (Yeung et al. 2025) inside nnU-Net v2.

Kept import-light on purpose: the start-up line in `nnunetv2_mn_ext.pth` imports
`nnunetv2_mn.trainers.discovery`, and so this package, at every interpreter start.
"""
__version__ = "0.1.0"
