"""Checks at the start of training and errors written where the user looks: the training log.

`errors_to_training_log(trainer)` writes an exception that stops training, as one readable paragraph, into the
trainer's log file (nnU-Net prints the traceback to stderr only). `check_labeled_data(trainer)` checks the
preprocessed labelled segmentations against dataset.json before anything is trained.
"""
from contextlib import contextmanager

from batchgenerators.utilities.file_and_folder_operations import join
from nnunetv2.training.dataloading.nnunet_dataset import infer_dataset_class

from nnunetv2_mn.data.validation import check_label_values


def one_paragraph(error: BaseException) -> str:
    """'ExceptionType: message' on one line (the message's line breaks and indentation collapsed)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


@contextmanager
def errors_to_training_log(trainer, what: str = "Training"):
    """Re-raise any exception after writing it to the trainer's log file as one paragraph."""
    try:
        yield
    except Exception as e:
        log_file = getattr(trainer, "log_file", None)
        if log_file is not None and getattr(trainer, "local_rank", 0) == 0:
            trainer.print_to_log_file(f"ERROR: {what} stopped: {one_paragraph(e)}", also_print_to_console=False)
            print(f"\nThe error is also written to {log_file}", flush=True)
        raise


def check_labeled_data(trainer) -> None:
    """Label values of every preprocessed labelled case against dataset.json (names the case and the value)."""
    folder = trainer.preprocessed_dataset_folder
    dataset_class = trainer.dataset_class or infer_dataset_class(folder)
    identifiers = dataset_class.get_identifiers(folder)
    check_label_values(dataset_class(folder, identifiers), identifiers, trainer.label_manager,
                       join(trainer.preprocessed_dataset_folder_base, "dataset.json"))
