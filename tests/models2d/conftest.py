"""Fixtures for the 2D-branch tests: no network, tiny models, shared checks of the Branch2D contract."""
import copy

import pytest
import torch
import torch.nn.functional as F


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test may reach the Hugging Face hub (huggingface_hub reads the variable only at import)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture(autouse=True)
def few_threads():
    """Shared 2-core machine: keep torch from spawning more threads than it gets."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_segformer_config():
    from transformers import SegformerConfig

    return SegformerConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 32, 64], num_attention_heads=[1, 1, 2, 2],
                           decoder_hidden_size=32, num_labels=5)


class BranchChecks:
    """The Branch2D contract, shared by every implementation's tests."""

    @staticmethod
    def forward_shape(branch, num_classes, shape=(2, 3, 30, 37)):
        out = branch(torch.randn(*shape))
        assert out.shape == (shape[0], num_classes, *shape[2:])
        return out

    @staticmethod
    def train_steps(branch, num_classes, steps=3, size=(2, 3, 32, 32), lr=1e-2):
        """A few AdamW steps on one batch: eval loss decreases, trainable params (some) change, frozen
        params and frozen buffers stay bit-identical. Returns the batch used."""
        torch.manual_seed(0)
        x = torch.randn(*size)
        y = torch.randint(0, num_classes, (size[0], *size[2:]))
        before = copy.deepcopy(branch.state_dict())
        trainable = {n for n, p in branch.named_parameters() if p.requires_grad}
        assert trainable, "nothing to train"

        def eval_loss():
            branch.eval()
            with torch.no_grad():
                return F.cross_entropy(branch(x), y).item()

        loss0 = eval_loss()
        opt = torch.optim.AdamW([p for p in branch.parameters() if p.requires_grad], lr=lr, weight_decay=0.0)
        branch.train()
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(branch(x), y).backward()
            opt.step()
        assert eval_loss() < loss0
        after = branch.state_dict()
        saved = set(branch.trainable_state_dict())
        changed = {k for k in before if not torch.equal(before[k], after[k])}
        assert changed & trainable, "no trainable parameter changed"
        assert changed <= saved, f"changed but not checkpointed: {sorted(changed - saved)[:5]}"
        return x

    @staticmethod
    def reload_exact(trained, make_fresh, x):
        """A fresh instance built the same way, loaded with `trainable_state_dict`, is identical."""
        state = trained.trainable_state_dict()
        fresh = make_fresh()
        trained.eval()
        fresh.eval()
        with torch.no_grad():
            expected = trained(x)
            assert not torch.equal(fresh(x), expected), "training changed nothing the checkpoint carries"
            fresh.load_trainable_state_dict(state)
            assert torch.equal(fresh(x), expected)
        assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), trained.state_dict().values()))
        return state

    @staticmethod
    def trainable_names(branch):
        return {n for n, p in branch.named_parameters() if p.requires_grad}

    @staticmethod
    def param_count(branch):
        n_train = sum(p.numel() for p in branch.parameters() if p.requires_grad)
        return n_train, sum(p.numel() for p in branch.parameters())


@pytest.fixture
def checks():
    return BranchChecks
