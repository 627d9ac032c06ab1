"""The folder `nnUNet_extTrainer` points at (set by the `nnunetv2_mn_ext.pth` startup hook).

nnU-Net imports each module here by its bare name and drops it from sys.modules afterwards, so
the modules only re-export classes defined in `nnunetv2_mn` (which stay importable and picklable).
"""
