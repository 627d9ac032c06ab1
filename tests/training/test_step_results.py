"""to_host: a step's values copied to the host in one transfer; merge_step_results for the students of an iteration."""
import numpy as np
import pytest
import torch

from nnunetv2_mn.training.step_results import merge_step_results, to_host


def test_to_host_copies_every_tensor_in_one_transfer(monkeypatch):
    transfers = []
    cpu = torch.Tensor.cpu
    monkeypatch.setattr(torch.Tensor, "cpu", lambda self, *a, **k: transfers.append(self.shape) or cpu(self, *a, **k))
    a = {"loss": torch.tensor(0.5), "agreement": torch.tensor(float("nan")), "b_u": 1, "share": np.nan}
    b = {"loss_2d": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "flag": "x"}
    ha, hb = to_host(a, b)
    assert len(transfers) == 1 and transfers[0] == (6,)  # 1 + 1 + 4 values, one copy
    assert ha["loss"] == 0.5 and isinstance(ha["loss"], float) and np.isnan(ha["agreement"])
    assert ha["b_u"] == 1 and np.isnan(ha["share"]) and hb["flag"] == "x"
    np.testing.assert_array_equal(hb["loss_2d"], [[1.0, 2.0], [3.0, 4.0]])
    assert isinstance(a["loss"], torch.Tensor)  # the inputs are not changed
    assert to_host({"b_u": 2}) == [{"b_u": 2}] and len(transfers) == 1  # nothing to copy: no transfer


def test_merge_step_results_averages_shared_keys_ignoring_nan():
    merged = merge_step_results([{"loss": 1.0, "agreement": 0.5, "b_u": 1},
                                 {"loss": float("nan"), "agreement": 0.7, "b_u": 2, "loss_2d": 0.3}])
    assert merged["loss"] == 1.0 and merged["agreement"] == pytest.approx(0.6) and merged["b_u"] == 1.5
    assert merged["loss_2d"] == 0.3
    assert np.isnan(merge_step_results([{"a": float("nan")}, {"a": float("nan")}])["a"])
