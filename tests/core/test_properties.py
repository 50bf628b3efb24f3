"""Properties of the rule and the pipeline that hold for any input."""

import hashlib

import pytest
import torch

from casa_core.arbitration import arbitrate
from casa_core.engine import analyze, conclude
from casa_core.factorization import factorize
from casa_core.pipeline import convert, make_plan, open_sources
from casa_core.resources import demo_inputs
from casa_core.settings import RunOptions, TransferSettings
from casa_core.spectral import head_size, quantile
from tests.core import factories as f


def _layer(seed, m=48, n=48, r=4, drift=0.05):
    g = torch.Generator().manual_seed(seed)
    Ws = torch.randn(m, n, generator=g, dtype=torch.float64) / n ** 0.5
    Wt = Ws + drift * torch.randn(m, n, generator=g, dtype=torch.float64) / n ** 0.5
    B = torch.randn(m, r, generator=g, dtype=torch.float64) * 0.1
    A = torch.randn(r, n, generator=g, dtype=torch.float64) * 0.1
    return Ws, Wt, B, A


@pytest.mark.parametrize("shape", [(48, 48), (96, 40), (40, 96)])
def test_identical_target_gives_input_update(shape):
    Ws, _, B, A = _layer(0, *shape)
    st = analyze("x", Ws, Ws.clone(), B, A, 0.5, dtype=torch.float64, exact=True)
    res = conclude(st, TransferSettings(), "full", None)
    got = res.up.double() @ res.down.double()
    want = 0.5 * B @ A
    assert torch.allclose(got, want, atol=1e-12 * want.abs().max())


@pytest.mark.parametrize("shape", [(48, 48), (96, 40), (40, 96)])
def test_independent_of_svd_signs(shape):
    """Flipping the signs of singular vector pairs changes nothing in the update."""
    Ws, Wt, B, A = _layer(1, *shape)
    st = analyze("x", Ws, Wt, B, A, 1.0, dtype=torch.float64, exact=True)
    D1 = _dense(st)
    g = torch.Generator().manual_seed(5)
    s = torch.where(torch.rand(st.sigma.numel(), generator=g) < 0.5, -1.0, 1.0).double()
    st.U, st.V = st.U * s, st.V * s
    st.C_lora, st.C_fft = s[:, None] * st.C_lora * s, s[:, None] * st.C_fft * s
    if st.X is not None:
        st.X = s[:, None] * st.X
    D2 = _dense(st)
    assert torch.allclose(D1, D2, atol=1e-12 * D1.abs().max())


def _dense(st):
    res = conclude(st, TransferSettings(), "full", None)
    return res.up.double() @ res.down.double()


def test_quantile_matches_numpy_linear():
    import numpy as np

    x = torch.randn(1001, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for q in (0.0, 0.13, 0.5, 0.85, 1.0):
        assert quantile(x, q) == pytest.approx(float(np.quantile(x.numpy(), q, method="linear")), abs=1e-15)
        assert quantile(x, q) == pytest.approx(float(torch.quantile(x, q)), abs=1e-15)


def test_head_size_energy():
    s = torch.tensor([3.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    # energies 9, 4, 1, .25 of 14.25: cumulative .632, .912 -> k = 2 for 0.90
    assert head_size(s, True, 0.90) == 2
    assert head_size(s, False, 0.90) == 4


def test_capping_rule_on_a_hand_made_case():
    """Step 9 exactly: capped entries take the larger of the two minus the drift."""
    sigma = torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)
    Cl = torch.tensor([[2.0, .1, .1, .1], [.1, 1.0, .1, .1], [.1, .1, .3, .1], [.1, .1, .1, .2]], dtype=torch.float64)
    Cf = torch.tensor([[1.0, .2, .1, .1], [.2, 3.0, .1, .1], [.1, .1, .2, .1], [.1, .1, .1, .1]], dtype=torch.float64)
    arb = arbitrate(Cl, Cf, sigma, 4, TransferSettings(q_act=0.0))
    dom = arb.rowdom[:, None] | arb.coldom[None, :]
    for i in range(4):
        for j in range(4):
            if arb.capped[i, j]:
                big = Cl[i, j] if abs(Cl[i, j]) > abs(Cf[i, j]) else Cf[i, j]
                assert arb.C_casa[i, j] == big - Cf[i, j]
            elif dom[i, j]:
                assert arb.C_casa[i, j] == Cl[i, j]
            else:
                assert arb.C_casa[i, j] == Cl[i, j] - Cf[i, j]
    assert bool(arb.capped.any()) and bool((~dom).any())


@pytest.mark.parametrize("spectrum", ["low-rank+noise", "slow-decay", "flat"])
def test_randomized_factorization_within_bound(spectrum):
    """The seeded randomized path keeps a residual within 0.1% of the truncated SVD's."""
    g = torch.Generator().manual_seed(3)
    m, n = 700, 400
    if spectrum == "low-rank+noise":
        D = torch.randn(m, 40, generator=g) @ torch.randn(40, n, generator=g) + 0.3 * torch.randn(m, n, generator=g)
    else:
        q1, _ = torch.linalg.qr(torch.randn(m, n, generator=g))
        q2, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
        s = torch.arange(1, n + 1, dtype=torch.float32) ** (-0.5 if spectrum == "slow-decay" else -0.05)
        D = (q1 * s) @ q2.T
    fac = factorize(D, 32, exact=False)
    best = torch.linalg.svdvals(D.double())
    opt = float((best[32:] ** 2).sum().sqrt())
    got = float((D.double() - fac.up.double() @ fac.down.double()).norm())
    assert got <= opt * 1.001
    e_opt = float((best[:32] ** 2).sum() / (best ** 2).sum())
    assert e_opt - 0.002 * (1 - e_opt) - 1e-6 <= fac.energy_kept <= e_opt + 1e-6
    assert factorize(D, 32, exact=False).up.equal(fac.up)  # seeded: same bytes


def test_direct_gives_back_input(tmp_path):
    d = demo_inputs()
    plan = make_plan(*open_sources(d["base"], d["target"], d["lora"]))
    out = tmp_path / "direct.safetensors"
    convert(plan, out, TransferSettings(method="direct"), RunOptions(device="cpu", view_size=0))
    got = f.read_updates(out)
    src = f.read_updates(d["lora"])
    assert set(got) == set(src)
    for k in src:
        assert torch.allclose(got[k], src[k], atol=1e-6 * src[k].abs().max()), k


def test_same_inputs_same_bytes(tmp_path, casa_cmd):
    import subprocess

    digests = []
    for i in range(2):
        out = tmp_path / f"o{i}.safetensors"
        subprocess.run(casa_cmd + ["convert", "--demo", "-o", str(out), "-q", "--device", "cpu"], check=True)
        digests.append(hashlib.sha256(out.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


def test_demo_transfers_every_layer_and_differs_from_direct(tmp_path):
    d = demo_inputs()
    plan = make_plan(*open_sources(d["base"], d["target"], d["lora"]))
    out = tmp_path / "casa.safetensors"
    report = convert(plan, out, TransferSettings(), RunOptions(device="cpu", view_size=0))
    assert report["totals"]["layers"] == len(plan.layers) == 32
    assert report["totals"]["capped"] > 0
    got, src = f.read_updates(out), f.read_updates(d["lora"])
    assert any(not torch.allclose(got[k], src[k], atol=1e-3 * src[k].abs().max()) for k in src)


@pytest.mark.parametrize("cond", [10.0, 1e5, float("inf")], ids=["well", "ill", "rank-deficient"])
def test_fast_basis_matches_svd(cond):
    """The Gram-eigh basis spans the same routing as LAPACK's SVD, however W is conditioned."""
    from casa_core.spectral import thin_svd

    g = torch.Generator().manual_seed(2)
    m, n = 120, 60
    q1, _ = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -5 if cond == 1e5 else -1, n, dtype=torch.float64)
    if cond == float("inf"):
        s[-5:] = 0
    W = ((q1 * s) @ q2.T).float()
    U, sig, V = thin_svd(W, exact=False)
    assert torch.allclose((U * sig) @ V.T, W, atol=1e-5 * float(s[0]))
    assert torch.allclose(V.T @ V, torch.eye(n), atol=1e-5)
    assert torch.allclose(sig.double(), s, atol=1e-5 * float(s[0]))
