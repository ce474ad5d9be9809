"""TabularNet behaviour: it can learn, it grows without forgetting, it rebuilds from JSON."""

import json

import pytest
import torch
import torch.nn.functional as F

from model.tabularnet import TabularNet, predict_logits


def batch(n=64, n_num=6, cards=(5, 3), seed=0):
    g = torch.Generator().manual_seed(seed)
    x_num = torch.randn(n, n_num, generator=g)
    x_cat = torch.stack([torch.randint(0, c, (n,), generator=g) for c in cards], dim=1)
    y = torch.randint(0, 2, (n,), generator=g).float()
    return x_num, x_cat, y


def test_forward_shape():
    torch.manual_seed(0)
    model = TabularNet(6, [5, 3], embedding_dim=4, hidden=(16, 8), dropout=0.0)
    x_num, x_cat, _ = batch()
    assert model(x_num, x_cat).shape == (64, 1)  # the contract: logits [n, n_outputs]
    assert TabularNet(6, [5, 3], embedding_dim=4, hidden=(8,), n_outputs=3)(x_num, x_cat).shape == (64, 3)


def test_no_categorical_features():
    model = TabularNet(6, [], embedding_dim=4, hidden=(8,), dropout=0.0)
    x_num, _, _ = batch()
    assert model(x_num, torch.empty(64, 0, dtype=torch.int64)).shape == (64, 1)


def test_loss_goes_down_on_one_batch():
    torch.manual_seed(0)
    model = TabularNet(6, [5, 3], embedding_dim=4, hidden=(32, 16), dropout=0.0)
    x_num, x_cat, y = batch()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = F.binary_cross_entropy_with_logits(model(x_num, x_cat)[:, 0], y).item()
    for step in range(300):
        loss = F.binary_cross_entropy_with_logits(model(x_num, x_cat)[:, 0], y)
        if loss.item() < 0.1 * first:  # random labels: only memorising gets here
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first, f"loss {first:.3f} -> {loss.item():.3f} after {step} steps"


def test_grow_embeddings_keeps_old_outputs_exactly():
    torch.manual_seed(0)
    model = TabularNet(6, [5, 3], embedding_dim=4, hidden=(16,), dropout=0.1).eval()
    x_num, x_cat, _ = batch()
    before = predict_logits(model, x_num, x_cat)
    old_rows = model.embeddings[0].weight.detach().clone()
    model.grow_embeddings([8, 3])
    assert model.cardinalities == [8, 3]
    assert model.embeddings[0].num_embeddings == 8
    torch.testing.assert_close(predict_logits(model, x_num, x_cat), before, rtol=0, atol=0)
    new_rows = model.embeddings[0].weight.detach()
    torch.testing.assert_close(new_rows[:5], old_rows, rtol=0, atol=0)
    for row in new_rows[5:]:  # a new category starts as the average known one, not as OOV
        torch.testing.assert_close(row, old_rows[1:].mean(0))
    # and the grown rows train
    assert model.embeddings[0].weight.requires_grad


def test_embeddings_only_grow():
    model = TabularNet(6, [5, 3])
    with pytest.raises(ValueError, match="only grow"):
        model.grow_embeddings([4, 3])
    with pytest.raises(ValueError, match="cardinalities"):
        model.grow_embeddings([5])


def test_architecture_round_trip():
    torch.manual_seed(0)
    model = TabularNet(6, [5, 3], embedding_dim=4, hidden=(16, 8), dropout=0.2).eval()
    arch = json.loads(json.dumps(model.architecture()))
    rebuilt = TabularNet.from_architecture(arch).eval()
    assert rebuilt.architecture() == model.architecture()
    rebuilt.load_state_dict(model.state_dict())
    x_num, x_cat, _ = batch()
    torch.testing.assert_close(predict_logits(rebuilt, x_num, x_cat), predict_logits(model, x_num, x_cat), rtol=0, atol=0)


def test_no_batchnorm_so_a_row_scores_the_same_in_any_batch():
    torch.manual_seed(0)
    model = TabularNet(6, [5, 3], embedding_dim=4, hidden=(16,), dropout=0.0).eval()
    x_num, x_cat, _ = batch()
    full = predict_logits(model, x_num, x_cat)
    torch.testing.assert_close(predict_logits(model, x_num[:1], x_cat[:1]), full[:1])
