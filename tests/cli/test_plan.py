"""nnUNetv2_mn_plan: fingerprint extraction, the plans file it writes, the summary, what it refuses."""
import json
import os

import pytest

from nnunetv2_mn.cli.plan import main
from nnunetv2_mn.data.synthetic import make_synthetic_dataset
from nnunetv2_mn.settings import PLANS_KEY_2D_MODEL, PLANS_KEY_SLICE_AXIS

MN_KEYS = {"mn_2d_model", "mn_slice_axis", "mn_gpu_memory_target_gb", "mn_3d_memory_target_gb",
           "mn_estimated_3d_memory_gb", "mn_estimated_2d_memory_gb", "mn_2d_bytes_per_pixel", "mn_2d_slices_per_step"}


def test_cli_extracts_fingerprint_plans_and_keeps_nnunetplans(nnunet_dirs, capsys):
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import ExperimentPlanner
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    make_synthetic_dataset(901, name="Tiny", num_labeled=3, num_unlabeled=0, num_test=0, shape=(16, 24, 24),
                           spacing=(2.0, 1.0, 1.0))
    prep = os.path.join(nnunet_dirs["nnUNet_preprocessed"], "Dataset901_Tiny")
    main(["-d", "901", "-np", "1"])  # no fingerprint yet: extracted with nnU-Net's API
    assert os.path.isfile(os.path.join(prep, "dataset_fingerprint.json"))
    out = capsys.readouterr().out
    assert "nnUNetv2_train 901 3d_fullres 0 -tr nnUNetTrainerMN -p nnUNetMNPlans" in out
    assert "nnUNetv2_mn_preprocess_unlabeled -d 901 -c 3d_fullres -p nnUNetMNPlans" in out

    # the user's own nnU-Net plans, then a re-plan with other M&N settings
    ExperimentPlanner(901, 8).plan_experiment()
    nnunet_plans = open(os.path.join(prep, "nnUNetPlans.json"), "rb").read()
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["-d", "901", "--slice_axis", "2"])
    main(["-d", "901", "--slice_axis", "2", "--2d_model", "/models/segformer-b0", "-gpu_memory_target", "6",
          "--overwrite"])
    assert open(os.path.join(prep, "nnUNetPlans.json"), "rb").read() == nnunet_plans

    plans = json.load(open(os.path.join(prep, "nnUNetMNPlans.json")))
    assert list(plans["configurations"]) == ["3d_fullres"] and plans["plans_name"] == "nnUNetMNPlans"
    c = plans["configurations"]["3d_fullres"]
    assert MN_KEYS <= set(c)
    assert (c["mn_2d_model"], c["mn_slice_axis"], c["mn_gpu_memory_target_gb"]) == ("/models/segformer-b0", 2, 6.0)
    # a tiny image: the patch is the whole image at any target, so the 3D part gets exactly total - e
    assert c["patch_size"] == [16, 24, 24] and c["batch_size"] == 2
    assert c["mn_estimated_2d_memory_gb"] == pytest.approx(2 * 16 * 24 * 24 * 4.6e3 / 1e9, abs=1e-4)
    assert c["mn_3d_memory_target_gb"] == pytest.approx(6.0 - c["mn_estimated_2d_memory_gb"], abs=1e-4)
    assert c["mn_2d_slices_per_step"] == 2 * 24

    cm = PlansManager(os.path.join(prep, "nnUNetMNPlans.json")).get_configuration("3d_fullres")
    assert cm.configuration[PLANS_KEY_SLICE_AXIS] == 2
    assert cm.configuration[PLANS_KEY_2D_MODEL] == "/models/segformer-b0"
    assert list(cm.patch_size) == [16, 24, 24]

    with pytest.raises(SystemExit, match="smallest 3D target"):  # a 2D model that cannot fit next to any 3D plan
        main(["-d", "901", "-pl_name", "Other", "--bytes_per_pixel", "1e6"])
    assert not os.path.exists(os.path.join(prep, "Other.json"))
