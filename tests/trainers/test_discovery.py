"""How nnU-Net finds the trainers: the lookup folder, the start-up hook, nnU-Net's own lookup."""
import importlib
import os
import pickle
import pkgutil
import subprocess
import sys

from nnunetv2_mn.trainers import discovery


def test_add_lookup_dir_keeps_the_users_folders_and_adds_ours_once():
    env = {"nnUNet_extTrainer": "/mine"}
    assert not discovery.is_registered(env)
    discovery.add_lookup_dir(env)
    discovery.add_lookup_dir(env)
    assert env["nnUNet_extTrainer"].split(os.pathsep) == ["/mine", discovery.LOOKUP_DIR]
    assert discovery.is_registered(env)


def test_the_lookup_folder_holds_one_module_without_double_underscores():
    modules = [m.name for m in pkgutil.iter_modules([discovery.LOOKUP_DIR])]
    assert modules == ["nnunetv2_mn_trainers"]
    assert "__" not in os.path.basename(discovery.LOOKUP_DIR)


def test_trainer_classes_lists_every_trainer_defined_in_the_package():
    """A trainer module missing from TRAINER_MODULES would be invisible to nnU-Net."""
    import nnunetv2_mn.trainers as pkg
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    defined = set()
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if ".lookup" in info.name or info.name.endswith(".discovery"):
            continue
        module = importlib.import_module(info.name)
        defined |= {k for k, v in vars(module).items() if isinstance(v, type) and issubclass(v, nnUNetTrainer)
                    and v.__module__ == module.__name__}
    classes = discovery.trainer_classes()
    assert set(classes) == defined
    assert {"nnUNetTrainerMN", "nnUNetTrainerMeanTeacher", "nnUNetTrainerUAMT", "nnUNetTrainerDTC",
            "nnUNetTrainerSelfTraining", "nnUNetTrainerMN_EffNetLite0"} <= defined


def test_nnunets_lookup_returns_the_packages_class_which_pickles(monkeypatch):
    from nnunetv2_mn.trainers.mn import nnUNetTrainerMN

    monkeypatch.setenv("nnUNet_extTrainer", discovery.LOOKUP_DIR)  # nnU-Net reads it at each lookup
    cls = discovery.find_trainer("nnUNetTrainerMN")
    assert cls is nnUNetTrainerMN  # one identity: imported from the package, not re-defined by the lookup
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert "nnunetv2_mn_trainers" not in sys.modules  # nnU-Net dropped its bare-name import


def test_package_attribute_access_loads_a_trainer_by_name():
    from nnunetv2_mn.trainers import nnUNetTrainerMN_EffNetLite0
    from nnunetv2_mn.trainers.variants.mn_variants import nnUNetTrainerMN_EffNetLite0 as defined
    assert nnUNetTrainerMN_EffNetLite0 is defined


def _fresh_interpreter_ext_trainer(**env_changes):
    env = {k: v for k, v in os.environ.items() if k not in ("nnUNet_extTrainer", discovery.NO_HOOK_VAR)}
    env.update(env_changes)
    code = "import os, sys; print(os.environ.get('nnUNet_extTrainer', '')); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert not out.stderr.strip(), out.stderr  # the .pth line must not print an error at start-up
    return out.stdout.split("\n")[:2]


def test_the_start_up_hook_registers_the_lookup_folder_without_importing_torch():
    value, torch_loaded = _fresh_interpreter_ext_trainer()
    assert value.split(os.pathsep) == [discovery.LOOKUP_DIR] and torch_loaded == "False"
    value, _ = _fresh_interpreter_ext_trainer(**{discovery.NO_HOOK_VAR: "1"})
    assert value == ""


def test_the_documented_export_line_prints_the_lookup_folder():
    cmd = discovery.EXPORT_LINE.split("$(", 1)[1].rstrip(")")  # python -c "..."
    code = cmd.split('-c "', 1)[1].rstrip('"')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == discovery.LOOKUP_DIR
