"""The module nnU-Net's external trainer lookup imports by its bare name: every trainer of nnunetv2_mn, imported
from the package (see `nnunetv2_mn.trainers.discovery`)."""
from nnunetv2_mn.trainers.discovery import trainer_classes

globals().update(trainer_classes())
