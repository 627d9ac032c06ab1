"""Plans presets (nnunetv2_mn.plans.presets): nnU-Net reads them and builds its own network from them, with the
expected patch and batch; the LA preset is what nnU-Net's planner makes for its fingerprint."""
import json
import os

import pytest
import torch

from nnunetv2_mn.plans.presets import (CONFIGURATION, LA_FINGERPRINT, PRESETS, nnunet_plans_for_fingerprint,
                                       preset_dataset_json, preset_plans, write_preset)

EXPECTED = {"hippocampus": ([40, 48, 40], 2, 3, 4), "la": ([64, 160, 160], 2, 2, 6)}  # patch, batch, labels, stages


def _network(plans, dataset_json):
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    pm = PlansManager(plans)
    cm = pm.get_configuration(CONFIGURATION)
    lm = pm.get_label_manager(dataset_json)
    n_in = determine_num_input_channels(pm, cm, dataset_json)
    net = get_network_from_plans(cm.network_arch_class_name, cm.network_arch_init_kwargs,
                                 cm.network_arch_init_kwargs_req_import, n_in, lm.num_segmentation_heads,
                                 allow_init=True, deep_supervision=True)
    return pm, cm, lm, n_in, net


@pytest.mark.parametrize("name", PRESETS)
def test_preset_builds_nnunets_network_with_the_expected_patch_and_batch(name):
    patch, batch, labels, stages = EXPECTED[name]
    plans, dataset_json = preset_plans(name), preset_dataset_json(name)
    pm, cm, lm, n_in, net = _network(plans, dataset_json)
    assert cm.patch_size == patch and cm.batch_size == batch
    assert cm.spacing == plans["original_median_spacing_after_transp"]
    assert n_in == 1 and lm.num_segmentation_heads == labels and not lm.has_regions
    assert type(net).__name__ == "PlainConvUNet" and len(net.encoder.stages) == stages
    # the patch is divisible by the network's total stride along every axis (nnU-Net's planner guarantees it)
    strides = torch.tensor(cm.network_arch_init_kwargs["strides"]).prod(0)
    assert all(p % int(s) == 0 for p, s in zip(patch, strides))
    assert json.loads(json.dumps(plans)) == plans  # plain JSON, as nnUNetPlans.json


def test_hippocampus_preset_network_runs_on_its_patch():
    pm, cm, lm, n_in, net = _network(preset_plans("hippocampus"), preset_dataset_json("hippocampus"))
    with torch.no_grad():
        outs = net(torch.randn(1, n_in, *cm.patch_size))
    # deep supervision: one output per decoder stage, the first at the patch size
    assert outs[0].shape == (1, lm.num_segmentation_heads, *cm.patch_size) and len(outs) == 3


def test_write_preset_is_read_by_nnunets_trainer(tmp_path, monkeypatch):
    """nnUNetTrainer's own constructor takes the written plans (the step-cost benchmark's path)."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    for k in ("nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(k, str(tmp_path / k))
    folder = write_preset("la", str(tmp_path / "nnUNet_preprocessed"))
    plans = json.loads(open(os.path.join(folder, "nnUNetPlans.json")).read())
    assert plans == preset_plans("la")
    plans["continue_training"] = False
    trainer = nnUNetTrainer(plans, CONFIGURATION, "all", json.loads(open(os.path.join(folder, "dataset.json")).read()),
                            device=torch.device("cpu"))
    assert trainer.configuration_manager.patch_size == [64, 160, 160] and trainer.configuration_manager.batch_size == 2


def test_unknown_preset_is_an_error():
    with pytest.raises(ValueError, match="unknown plans preset"):
        preset_plans("pancreas")


def test_la_preset_is_nnunets_plan_for_the_la_fingerprint(tmp_path, monkeypatch):
    """nnU-Net's ExperimentPlanner on LA_FINGERPRINT plans the preset's patch and network (its batch is 3, the
    preset keeps 2)."""
    monkeypatch.setenv("nnUNet_n_proc_DA", "2")
    planned = nnunet_plans_for_fingerprint(LA_FINGERPRINT, preset_dataset_json("la"), str(tmp_path))
    planned = json.loads(json.dumps(planned, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
    got, want = planned["configurations"][CONFIGURATION], preset_plans("la")["configurations"][CONFIGURATION]
    assert got["patch_size"] == want["patch_size"] and got["spacing"] == want["spacing"]
    assert got["architecture"] == want["architecture"]
    assert got["batch_size"] >= want["batch_size"]
    assert os.environ.get("nnUNet_raw") != str(tmp_path / "nnUNet_raw")  # the caller's folders are restored
