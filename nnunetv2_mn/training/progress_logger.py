"""nnU-Net's LocalLogger with extra per-epoch keys and extra panels in progress.png."""
import os
from typing import Dict, List, Sequence

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from nnunetv2.training.logging.nnunet_logger import LocalLogger  # noqa: E402


class SemiSupervisedLocalLogger(LocalLogger):
    """Registers extra keys (one value per epoch each, as nnU-Net's logger requires) and draws
    them below nnU-Net's three standard panels. `panels` maps a panel title to the keys it shows."""

    def __init__(self, panels: Dict[str, Sequence[str]], verbose: bool = False):
        super().__init__(verbose)
        self.panels = {title: list(keys) for title, keys in panels.items()}
        for keys in self.panels.values():
            for k in keys:
                self.my_fantastic_logging.setdefault(k, [])

    def load_checkpoint(self, checkpoint: dict):
        """Older checkpoints may lack some of our keys: pad them so that every list has one entry per epoch."""
        n = len(checkpoint.get("train_losses", []))
        for keys in self.panels.values():
            for k in keys:
                checkpoint.setdefault(k, [float("nan")] * n)
        super().load_checkpoint(checkpoint)

    def plot_progress_png(self, output_folder):
        log = self.my_fantastic_logging
        epoch = min(len(v) for v in log.values()) - 1
        if epoch < 0:
            return
        x = list(range(epoch + 1))
        n_rows = 3 + len(self.panels)
        fig, axes = plt.subplots(n_rows, 1, figsize=(18, 6 * n_rows))
        # nnU-Net's panels: losses + pseudo Dice, epoch duration, learning rate
        ax, ax2 = axes[0], axes[0].twinx()
        ax.plot(x, log["train_losses"][:epoch + 1], color="b", label="loss_tr")
        ax.plot(x, log["val_losses"][:epoch + 1], color="r", label="loss_val")
        ax2.plot(x, log["mean_fg_dice"][:epoch + 1], color="g", ls="dotted", label="pseudo dice")
        ax2.plot(x, log["ema_fg_dice"][:epoch + 1], color="g", label="pseudo dice (mov. avg.)")
        ax.set_ylabel("loss"), ax2.set_ylabel("pseudo dice"), ax.legend(loc=(0, 1)), ax2.legend(loc=(0.2, 1))
        durations = np.array(log["epoch_end_timestamps"][:epoch + 1]) - np.array(log["epoch_start_timestamps"][:epoch + 1])
        axes[1].plot(x, durations, color="b", label="epoch duration [s]")
        axes[1].legend(loc=(0, 1))
        axes[2].plot(x, log["lrs"][:epoch + 1], color="b", label="learning rate")
        axes[2].legend(loc=(0, 1))
        for ax, (title, keys) in zip(axes[3:], self.panels.items()):
            for k in keys:
                ax.plot(x, np.asarray(log[k][:epoch + 1], dtype=float), label=k, marker=".")
            ax.set_title(title, loc="right"), ax.legend(loc=(0, 1), ncol=max(1, len(keys)))
        for ax in axes:
            ax.set_xlabel("epoch")
        fig.tight_layout()
        fig.savefig(os.path.join(output_folder, "progress.png"))
        plt.close(fig)


def install_logger(trainer, panels: Dict[str, List[str]]) -> None:
    """Swap the trainer's local logger for one that knows the extra keys (call in __init__)."""
    trainer.logger.local_logger = SemiSupervisedLocalLogger(panels)
