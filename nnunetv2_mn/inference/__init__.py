"""Prediction on top of nnU-Net's predictor: voxel uncertainty maps."""
