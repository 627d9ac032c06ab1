"""The trainers nnU-Net runs (`-tr NAME`): the semi-supervised base, M&N, Mean Teacher, self-training, UA-MT, DTC
and their variants (`variants/`). How nnU-Net finds them: `discovery`.

    from nnunetv2_mn.trainers import nnUNetTrainerMN   # any trainer, by name

Import-light: the start-up hook imports `discovery` from here in every Python process; trainer classes load on
first access.
"""


def __getattr__(name: str):
    if name.startswith("nnUNetTrainer"):
        from .discovery import trainer_classes

        classes = trainer_classes()
        if name in classes:
            return classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
