"""Messages about the 2D model and an honest doctor (issue 10, items 7 and 8)."""
import io
import time

import pytest

from nnunetv2_mn.cli import doctor
from nnunetv2_mn.models2d import Pretrained2DModelNotFound, build_branch2d

DID = "940"  # tests/reliability/conftest.py


@pytest.fixture
def hub_unreachable(monkeypatch):
    """Online mode, but the hub endpoint refuses connections (no request leaves this machine)."""
    for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy",
              "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(v, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")


# ---------------------------------------------------------------- 7. messages about the 2D model
def test_local_path_in_the_variable_is_named_as_the_failing_source(monkeypatch):
    monkeypatch.setenv("nnUNet_MN_2d_model", "/no/such/dir")
    with pytest.raises(Pretrained2DModelNotFound) as info:
        build_branch2d("segformer", 3, source="/no/such/dir")
    message = str(info.value)
    assert "set by the environment variable nnUNet_MN_2d_model" in message
    assert "This variable is the failing source" in message
    assert "from_pretrained('/no/such/dir')" not in message  # a local path is not a hub id
    assert "from_pretrained('nvidia/segformer-b2-finetuned-ade-512-512')" in message
    assert "-tr nnUNetTrainerMN_EffNetLite0" in message


def test_unreachable_hub_fails_fast_with_the_offline_alternative(hub_unreachable):
    start = time.time()
    with pytest.raises(Pretrained2DModelNotFound) as info:
        build_branch2d("segformer", 3, source="nnunetv2-mn-tests/not-a-cached-model")
    assert time.time() - start < 10  # not ~45 s of retries
    message = str(info.value)
    assert "is not reachable from here" in message and "-tr nnUNetTrainerMN_EffNetLite0" in message


def test_trainer_message_offline_names_the_effnet_trainer(hub_unreachable, planned, new_trainer):
    from nnunetv2_mn.trainers.mn import nnUNetTrainerMN

    class Missing(nnUNetTrainerMN):
        branch2d_source = "nnunetv2-mn-tests/not-a-cached-model"

    trainer = new_trainer(planned["preprocessed"], Missing)
    with pytest.raises(Pretrained2DModelNotFound, match="-tr nnUNetTrainerMN_EffNetLite0"):
        trainer.build_branch2d()


# ---------------------------------------------------------------- 8. the doctor
def test_doctor_fails_on_an_explicit_2d_model_setting_that_cannot_load(monkeypatch, tmp_path):
    monkeypatch.setenv("nnUNet_MN_2d_model", str(tmp_path / "not_a_model"))
    (tmp_path / "not_a_model").mkdir()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    checks = [c for c in doctor.build_checks([], None)][-2:]  # the two 2D-model checks
    segformer = doctor.run_checks(checks[:1], out=io.StringIO())[0]
    assert segformer.failed and "from nnUNet_MN_2d_model" in segformer.message
    assert "is the failing source" in segformer.fix


def test_doctor_builds_each_2d_model_with_its_trainers_finetuning(monkeypatch):
    from nnunetv2_mn.models2d import registry
    seen = {}

    def spy(kind, num_classes, finetune="lora", source=None, config=None, **kwargs):
        seen[kind] = finetune
        raise Pretrained2DModelNotFound("not built in this test")

    monkeypatch.setattr(registry, "build_branch2d", spy)
    doctor.check_2d_model("effnet_lite0", None)
    doctor.check_2d_model("segformer", "/x")
    assert seen == {"effnet_lite0": "whole", "segformer": "lora"}


def _damage_label(planned):
    import numpy as np
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    folder = str(planned["preprocessed"] / "nnUNetPlans_3d_fullres")
    data, seg, _, props = nnUNetDatasetBlosc2(folder).load_case("case_001")
    seg = np.array(seg[:])
    seg[0, 0, 0, 0] = 7
    import os
    for suffix in (".b2nd", "_seg.b2nd"):
        os.remove(os.path.join(folder, "case_001" + suffix))
    nnUNetDatasetBlosc2.save_case(np.array(data[:]), seg, props, os.path.join(folder, "case_001"))


def test_doctor_checks_one_dataset_end_to_end(planned, capsys):
    from nnunetv2_mn.cli.doctor_dataset import dataset_checks
    from nnunetv2_mn.data.unlabeled import preprocess_unlabeled

    run = lambda: {r.name.split(" ", 1)[1]: r for r in doctor.run_checks(dataset_checks(DID), out=io.StringIO())}
    results = run()
    assert results["raw layout"].status == doctor.OK
    assert results["unlabelled images"].status == doctor.OK
    assert results["preprocessing (nnUNetPlans 3d_fullres)"].failed  # unlabelled cases not preprocessed yet
    assert "nnUNetv2_mn_preprocess_unlabeled -d 940" in results["preprocessing (nnUNetPlans 3d_fullres)"].fix

    preprocess_unlabeled(DID, num_processes=1, verbose=False)
    assert all(r.status == doctor.OK for r in run().values()), run()

    _damage_label(planned)
    bad = planned["raw"] / "imagesUnlabeled" / "case_005_0000.nii.gz"
    bad.write_bytes(bad.read_bytes()[:300])
    results = run()
    assert results["label values"].failed and "case_001: [7]" in results["label values"].message
    assert results["unlabelled images"].failed and "case_005_0000.nii.gz" in results["unlabelled images"].message
    assert results["preprocessing (nnUNetPlans 3d_fullres)"].failed  # a raw case changed after preprocessing
    assert doctor.main(["--trainer", "nnUNetTrainerMN_debug", "-d", DID]) == 1
    assert "check(s) FAILED" in capsys.readouterr().out
