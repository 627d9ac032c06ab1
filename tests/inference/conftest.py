"""Fixtures of the inference tests: one M&N model trained with the stock command, shared by the ensemble and the
uncertainty tests (one training for both)."""
from pathlib import Path

import pytest

MN_TRAINER = "nnUNetTrainerMN_debug"


@pytest.fixture(scope="session")
def trained_mn(planned_synthetic, tmp_path_factory, cli):
    """`nnUNetv2_train -tr nnUNetTrainerMN_debug` on fold 0 of the session's synthetic data set, in an nnUNet_results
    of its own (trainings of the same trainer elsewhere never share it). The fold keeps its 2D model in
    fold_0/model2d. Returns the workspace (env pointing at that results folder) with the trained model folder
    (`model_dir`) and the trainer's name (`trainer`)."""
    results = tmp_path_factory.mktemp("nnUNet_results_mn")
    ws = {**planned_synthetic, "env": {**planned_synthetic["env"], "nnUNet_results": str(results)},
          "results": results}
    cli(["nnUNetv2_train", ws["dataset_id"], "3d_fullres", "0", "-tr", MN_TRAINER, "-device", "cpu"], ws["env"])
    model_dir = next(Path(results).glob(f"Dataset{ws['dataset_id']}_*")) / f"{MN_TRAINER}__nnUNetPlans__3d_fullres"
    return {**ws, "model_dir": model_dir, "trainer": MN_TRAINER}
