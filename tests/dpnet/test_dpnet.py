"""DP-Net: the constraints against their formulas, gradients, and training on planted parts."""

import numpy as np
import pytest
import torch

from partlearn._validation import DataError
from partlearn.dpnet import (DPNet, assignment, class_specificity, orthogonality,
                             part_responses, predict, predict_scores, train_dpnet)
from partlearn.dpnet._train import _holdout
from partlearn.config import DPNetConfig
from partlearn.data import make_planted_regions

N_CLASSES, N_IMAGES, N_REGIONS, DIM, K_PLANTED, Q = 4, 40, 30, 32, 2, 3
FAST = {"parts_per_class": Q, "epochs": 30, "batch_size": 8, "lr": 3e-2, "patience": 10,
        "progress": False}


def planted_data(seed=0, noise=0.5, n_clutter=40):
    """Every image: clutter regions shared by all classes plus ``K_PLANTED`` noisy copies of
    its class's planted prototypes; region counts vary per image (float16, as cached)."""
    d = make_planted_regions(N_CLASSES, N_IMAGES, N_REGIONS, DIM, k=K_PLANTED, noise=noise,
                             n_clutter=n_clutter, vary_regions=True, seed=seed)
    return [x.astype(np.float16) for x in d["X"]], d["y"]


@pytest.fixture(scope="module")
def data():
    return planted_data()


@pytest.fixture(scope="module")
def model(data):
    X, y = data
    return train_dpnet(X[::2], y[::2], **FAST)


# ------------------------------------------------------------------ constraints


def test_orthogonality_formula():
    rng = np.random.default_rng(0)
    U = rng.standard_normal((5, 7))
    u = U / np.linalg.norm(U, axis=1, keepdims=True)
    G = u @ u.T
    want = -(np.sum(G ** 2) - np.sum(np.diag(G) ** 2)) / 25
    assert float(orthogonality(torch.tensor(U))) == pytest.approx(want, rel=1e-5)
    # orthonormal rows (any scale): 0; two identical unit rows: -(2 * 1) / 4
    Q_, _ = np.linalg.qr(rng.standard_normal((7, 4)))
    assert float(orthogonality(torch.tensor(3 * Q_.T))) == pytest.approx(0, abs=1e-6)
    assert float(orthogonality(torch.tensor([[1., 0.], [2., 0.]]))) == pytest.approx(-0.5)


def test_assignment_formula_and_mask():
    rng = np.random.default_rng(1)
    S = rng.standard_normal((2, 4, 3))  # B, P, R
    mask = np.array([[True, True, False], [True, False, False]])
    s = np.exp(S) / np.exp(S).sum(axis=1, keepdims=True)
    ent = -(s * np.log(s)).sum(axis=1)  # (B, R)
    want = ent[mask].mean()  # mean over the 3 real regions
    got = float(assignment(torch.tensor(S), torch.tensor(mask)))
    assert got == pytest.approx(want, rel=1e-5)
    # the padded entries do not matter
    S2 = S.copy()
    S2[~np.broadcast_to(mask[:, None, :], S.shape)] = 1e3
    assert float(assignment(torch.tensor(S2), torch.tensor(mask))) == pytest.approx(want, rel=1e-5)
    # no mask: every region; one image (P, R)
    assert float(assignment(torch.tensor(S))) == pytest.approx(ent.mean(), rel=1e-5)
    assert float(assignment(torch.tensor(S[0]))) == pytest.approx(ent[0].mean(), rel=1e-5)
    # a temperature divides S before the softmax
    st = np.exp(S / 0.1) / np.exp(S / 0.1).sum(axis=1, keepdims=True)
    want_t = (-(st * np.log(st)).sum(axis=1))[mask].mean()
    assert float(assignment(torch.tensor(S), torch.tensor(mask), 0.1)) == pytest.approx(
        want_t, rel=1e-5)
    # uniform columns: log P; one-hot-like columns: ~0
    assert float(assignment(torch.zeros(1, 4, 5))) == pytest.approx(np.log(4), rel=1e-6)
    peaked = torch.full((1, 4, 5), -100.0)
    peaked[:, 0] = 100.0
    assert float(assignment(peaked)) == pytest.approx(0, abs=1e-6)


def test_class_specificity_formula():
    # 3 classes x 2 parts; part_class = [0, 0, 1, 1, 2, 2]
    part_class = np.repeat(np.arange(3), 2)
    V = np.zeros((3, 6))
    V[part_class, np.arange(6)] = 5.0  # own parts: ignored
    V[0, 2], V[1, 5], V[2, 0] = 1.0, 2.0, -0.5  # off-class entries
    want = (1.0 + 2.0 - 0.5) / (6 * 2)
    assert float(class_specificity(torch.tensor(V), part_class)) == pytest.approx(want)
    rng = np.random.default_rng(2)
    V = rng.standard_normal((3, 6))
    off = part_class[None, :] != np.arange(3)[:, None]
    assert float(class_specificity(torch.tensor(V), part_class)) == pytest.approx(
        V[off].sum() / 12, rel=1e-6)
    # part_class as the trainer gives it, a tensor on V's device (on CUDA too)
    assert float(class_specificity(torch.tensor(V), torch.tensor(part_class))) == pytest.approx(
        V[off].sum() / 12, rel=1e-6)


# ------------------------------------------------------------------ the model


def test_forward_shapes_and_mask():
    net = DPNet(6, 5, 3)
    with torch.no_grad():
        net.U.normal_()
        net.V.normal_()
    x = torch.nn.functional.normalize(torch.randn(2, 4, 5), dim=2)
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    x_pad = x.clone()
    x_pad[~mask] = 100.0  # padded rows must not reach b
    u = torch.nn.functional.normalize(net.U, dim=1)
    want = torch.stack([(u @ x[0, :3].T).amax(1), (u @ x[1, :1].T).amax(1)])
    for dense in (True, False):  # the same b and the same gradients either way
        net.zero_grad()
        logits, S, b = net(x_pad, mask, dense=dense)
        assert logits.shape == (2, 3) and S.shape == (2, 6, 4) and b.shape == (2, 6)
        torch.testing.assert_close(b, want)
        torch.testing.assert_close(logits, b @ net.V.T + net.bias)
        logits.square().sum().backward()
        grads = net.U.grad.clone(), net.V.grad.clone()
        if dense:
            want_grads = grads
        assert S.requires_grad == dense
    torch.testing.assert_close(grads, want_grads)


@pytest.mark.parametrize("term", ["ce", "orth", "assign", "cs"])
def test_gradients_flow(term):
    torch.manual_seed(0)
    net = DPNet(6, 5, 3)
    with torch.no_grad():
        net.U.normal_()
        net.V.normal_()
    x, mask = torch.randn(4, 7, 5), torch.ones(4, 7, dtype=torch.bool)
    mask[0, 5:] = False
    logits, S, _ = net(x, mask)
    loss = {"ce": lambda: torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])),
            "orth": lambda: -orthogonality(net.U),
            "assign": lambda: assignment(S, mask),
            "cs": lambda: class_specificity(net.V, np.repeat(np.arange(3), 2))}[term]()
    loss.backward()
    grads = {"ce": ("U", "V"), "orth": ("U",), "assign": ("U",), "cs": ("V",)}[term]
    for name in grads:
        g = getattr(net, name).grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name


# ------------------------------------------------------------------ training


def test_trainer_beats_chance(data, model):
    X, y = data
    test_X, test_y = X[1::2], y[1::2]
    assert model["U"].shape == (Q * N_CLASSES, DIM)
    np.testing.assert_allclose(np.linalg.norm(model["U"], axis=1), 1, rtol=1e-5)
    assert model["V"].shape == (N_CLASSES, Q * N_CLASSES)
    assert list(model["part_class"]) == list(np.repeat(np.arange(N_CLASSES), Q))
    assert list(model["classes"]) == [f"c{c}" for c in range(N_CLASSES)]
    acc = (predict(model, test_X) == test_y).mean()
    assert acc >= 0.8  # chance: 0.25
    assert model["val_accuracy"] >= 0.5
    assert 0 <= model["best_epoch"] < model["epochs_run"] <= FAST["epochs"]
    assert len(model["history"]["val_accuracy"]) == model["epochs_run"]
    assert model["history"]["train_loss"][-1] < model["history"]["train_loss"][0]
    assert predict_scores(model, test_X).shape == (len(test_X), N_CLASSES)
    b = part_responses(model, test_X)
    assert b.shape == (len(test_X), Q * N_CLASSES) and (np.abs(b) <= 1 + 1e-3).all()


def test_deterministic_and_constraints(data, model):
    X, y = data
    again = train_dpnet(X[::2], y[::2], **FAST)
    np.testing.assert_array_equal(model["U"], again["U"])
    np.testing.assert_array_equal(model["V"], again["V"])
    assert model["best_epoch"] == again["best_epoch"]
    assert not torch.are_deterministic_algorithms_enabled()  # left as it was
    # the constraints move the solution the way they should
    kw = dict(FAST, epochs=5, patience=5)
    free = train_dpnet(X[::2], y[::2], **kw)
    con = train_dpnet(X[::2], y[::2], lambda_orth=10.0, lambda_cs=100.0, **kw)
    assert float(orthogonality(torch.tensor(con["U"]))) > float(
        orthogonality(torch.tensor(free["U"])))
    pc = free["part_class"]
    assert float(class_specificity(torch.tensor(con["V"]), pc)) < float(
        class_specificity(torch.tensor(free["V"]), pc))


def test_host_copy_same_model_as_streaming(data, model, monkeypatch):
    """Training stacks the normalised rows once (under HOST_COPY_BYTES) instead of reading
    every image each epoch; above the budget it streams them, with the same model."""
    from partlearn.dpnet import _model as _dpnet_model
    X, y = data
    regions = _dpnet_model._Regions(X[::2], None, "dpnet", host_copy=True)
    assert regions.host is not None and regions.host.dtype == np.float16
    streamed = _dpnet_model._Regions(X[::2], None, "dpnet")
    assert streamed.host is None
    idx = np.array([5, 0, 17])
    for a, b in zip(regions.batch(idx), streamed.batch(idx)):
        assert torch.equal(a, b)
    monkeypatch.setattr(_dpnet_model, "HOST_COPY_BYTES", 0)
    assert _dpnet_model._Regions(X[::2], None, "dpnet", host_copy=True).host is None
    again = train_dpnet(X[::2], y[::2], **FAST)  # streamed: the budget is 0
    np.testing.assert_array_equal(model["U"], again["U"])
    np.testing.assert_array_equal(model["V"], again["V"])


def test_early_stopping_on_held_out_loss_then_refit(data, model):
    X, y = data[0][::2], data[1][::2]
    h = model["history"]["val_loss"]
    assert model["best_epoch"] == int(np.argmin(h)) and model["val_loss"] == h.min()
    if model["epochs_run"] < FAST["epochs"]:  # stopped: patience epochs without a lower loss
        assert model["epochs_run"] - 1 - model["best_epoch"] == FAST["patience"]
    assert model["refit"] and model["n_train"] + model["n_val"] == len(X)
    # without refit: the same held-out run, and the best epoch's weights come back
    kept = train_dpnet(X, y, **dict(FAST, refit=False))
    assert not kept["refit"]
    np.testing.assert_array_equal(kept["history"]["val_loss"], h)
    assert not np.array_equal(kept["U"], model["U"])
    classes, yi = np.unique(y, return_inverse=True)
    _, val = _holdout(yi, classes, DPNetConfig.val_fraction, 0)
    logits = torch.tensor(predict_scores(kept, [X[i] for i in val]))
    ce = float(torch.nn.functional.cross_entropy(logits, torch.tensor(yi[val])))
    assert ce == pytest.approx(kept["val_loss"], rel=1e-4)


def test_init_parts(data):
    X, y = data
    rng = np.random.default_rng(3)
    init = 3 * rng.standard_normal((Q * N_CLASSES, DIM)).astype(np.float32)
    out = train_dpnet(X[::2], y[::2], init_parts=init, **dict(FAST, epochs=1, lr=1e-12))
    np.testing.assert_allclose(out["U"], init / np.linalg.norm(init, axis=1, keepdims=True),
                               atol=1e-5)
    # V starts at the class structure
    np.testing.assert_allclose(out["V"], np.repeat(np.eye(N_CLASSES), Q, axis=1), atol=1e-5)


def test_bad_input(data):
    X, y = data
    with pytest.raises(DataError, match="160 images but labels of shape"):
        train_dpnet(X, y[:-1], **FAST)
    bad = list(X)
    bad[5] = np.zeros((4, DIM + 1), np.float16)
    with pytest.raises(DataError, match=r"image 5: regions should be a \(R, 32\)"):
        train_dpnet(bad, y, **FAST)
    bad = list(X)
    bad[7] = X[7].astype(np.float32)
    bad[7][2, 3] = np.nan
    with pytest.raises(DataError, match="image 7: region 2 .*NaN"):
        train_dpnet(bad, y, **FAST)
    few = np.array(list(y[:-N_IMAGES]) + ["lonely"])
    with pytest.raises(DataError, match="'lonely' has 1 training image"):
        train_dpnet(X[:len(few)], few, **FAST)
    with pytest.raises(DataError, match=r"init_parts has shape \(2, 32\); expected .*\(12, 32\)"):
        train_dpnet(X, y, init_parts=np.ones((2, DIM)), **FAST)
    model = train_dpnet(X[::4], y[::4], **dict(FAST, epochs=1))
    with pytest.raises(DataError, match=r"\(R, 32\)"):
        predict_scores(model, [np.zeros((3, 5))])


def test_config_defaults():
    cfg = DPNetConfig()
    assert cfg.variants == () and cfg.seeds == (0, 1, 2)  # no DP-Net unless asked for
    assert min(cfg.lambda_orth, cfg.lambda_assign, cfg.lambda_cs) > 0  # used when turned on
