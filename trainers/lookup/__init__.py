"""The folder `nnUNet_extTrainer` points at (`nnunetv2_mn.trainers.discovery`)."""
