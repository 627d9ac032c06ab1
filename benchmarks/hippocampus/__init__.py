"""The Hippocampus benchmark of issues #4, #5 and #9: M&N vs nnU-Net with few labels on real MRI.

One command builds the data sets, runs the stock console scripts row by row, evaluates the test cases
and writes `docs/benchmarks/hippocampus.md` (table, plots, commands, machine, wall times) plus the raw
JSON of every row. Nothing is typed in: every number in the report is read from this run's files.

    # the CPU table (about 13 hours on 2 idle cores, over several sessions; run it in the background)
    nohup python -m benchmarks.hippocampus --schedule cpu --workdir ~/mn_bench_cpu > bench_cpu.log 2>&1 &
    # the longer schedule for a GPU (SegFormer-B2 rows need its weights: hub access or --segformer DIR)
    python -m benchmarks.hippocampus --schedule gpu --workdir /scratch/mn_bench_gpu
    # what would run, with the expected wall time per row
    python -m benchmarks.hippocampus --schedule cpu --dry-run

Data (MSD Task04, ../shared/data/Task04_Hippocampus, 200 labelled cases), split with the project's
`nnUNetv2_mn_make_semisupervised`, seed 0: the same 40 test cases for every data set, then
  main   8 labelled + 152 unlabelled    (Dataset508_Hippocampus_8lab)
  small  4 labelled + 156 unlabelled    (Dataset504_Hippocampus_4lab; its 4 cases are among the 8)
  full   160 labelled                    (Dataset560_Hippocampus_160lab, the ceiling)
Each is planned by nnU-Net itself (`nnUNetv2_plan_and_preprocess`), so all rows of a data set share
its plans. Rows train fold `all` with the stock `nnUNetv2_train`, predict `imagesTs` with the stock
`nnUNetv2_predict` and are scored with `nnunetv2_mn.evaluation.evaluate.evaluate_folder` against
`labelsTs` (mm and voxel units).

Schedules are applied without touching the package: the factory module `bench_trainers.py` and a
`variants.json` in `<workdir>/bench_trainers/<schedule>/` make `<Trainer>_bench<schedule>(<Trainer>)` classes with
`schedule_overrides` (and, on CPU, an offline 2D model for the SegFormer-based trainers); the folder is appended
to `nnUNet_extTrainer` for the subprocesses, where nnU-Net's own trainer lookup finds them.
Resumable: a row whose record says ok is skipped; a row whose training finished is only predicted and
evaluated again; an interrupted training resumes with `--c`. A results folder remembers the settings it was
trained with and is never resumed by a row whose settings differ. On a new machine, `--import-records
docs/benchmarks/hippocampus_raw` takes the finished rows of the committed report into the work folder (the data
sets are prepared again and must give the same split and plans), so that the table goes on where it stopped:

    python -m benchmarks.hippocampus --schedule cpu --workdir ~/mn_bench_cpu \
        --import-records docs/benchmarks/hippocampus_raw --rows self_training
"""
from .cli import main, parse_args  # noqa: F401
from .cost import *  # noqa: F401,F403
from .plan import *  # noqa: F401,F403
from .report import *  # noqa: F401,F403
from .runner import *  # noqa: F401,F403
from .spec import *  # noqa: F401,F403
from .trainers import *  # noqa: F401,F403
