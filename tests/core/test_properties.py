"""Properties of the rule and the pipeline that hold for any input."""

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from casa_core import methods
from casa_core.arbitration import arbitrate
from casa_core.conversion import Conversion, analyse_layer
from casa_core.factorization import factorize
from casa_core.resources import demo_inputs
from casa_core.settings import RunOptions, TransferSettings
from casa_core.spectral import head_size, quantile
from tests.core import factories as f


def analyze(name, Ws, Wt, B, A, scale, settings=None, **kw):
    return analyse_layer(name, Ws, Wt, B, A, scale, params=settings.params if settings else None, **kw)


def conclude(analysis, settings, rank, view_size):
    return methods.get("casa").conclude(analysis, settings, rank, view_size)


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
    pair = st.pair
    s = torch.where(torch.rand(pair.sigma.numel(), generator=g) < 0.5, -1.0, 1.0).double()
    pair.U, pair.V = pair.U * s, pair.V * s
    st.lora.C_lora, st.C_fft = s[:, None] * st.lora.C_lora * s, s[:, None] * st.C_fft * s
    st.lora.UtB = s[:, None] * st.lora.UtB
    pair._dv = None         # D_fft V, kept from the first update: computed again in the flipped basis
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
    arb = arbitrate(Cl, Cf, sigma, 4, TransferSettings.of(q_act=0.0).params)
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
    conv = Conversion.open(d["base"], d["target"], d["lora"])
    out = tmp_path / "direct.safetensors"
    conv.convert(out, TransferSettings(method="direct"), RunOptions(device="cpu", view_size=0))
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
    conv = Conversion.open(d["base"], d["target"], d["lora"])
    out = tmp_path / "casa.safetensors"
    report = conv.convert(out, TransferSettings(), RunOptions(device="cpu", view_size=0))
    assert report.totals.layers == len(conv.plan.layers) == 32
    assert report.totals.capped > 0
    assert report.to_dict()["totals"]["capped"] == report.totals.capped
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
    U, sig, V, _ = thin_svd(W, exact=False)
    assert torch.allclose((U * sig) @ V.T, W, atol=1e-5 * float(s[0]))
    U2, sig2, V2, _ = thin_svd(W, exact=False, left=False)   # U left out only where W V / sigma is safe
    assert (U2 is None) == (cond == 10.0)
    assert sig2.equal(sig) and V2.equal(V)
    assert torch.allclose(V.T @ V, torch.eye(n), atol=1e-5)
    assert torch.allclose(sig.double(), s, atol=1e-5 * float(s[0]))


@pytest.mark.parametrize("shape,tau,q_dom,low_rank", [((300, 300), 0.5, 0.5, False), ((700, 300), 2.0, 0.9, False),
                                                      ((700, 300), 2.0, 0.1, False), ((300, 700), 2.0, 0.5, False),
                                                      ((700, 300), 2.0, 0.5, True), ((700, 300), 0.5, 0.5, False)],
                         ids=["square-strips", "tall-few-dominant", "tall-most-dominant", "wide", "tall-low-rank-drift",
                              "tall-all-dominant"])
def test_update_operator_is_the_dense_update(shape, tau, q_dom, low_rank):
    """The factorization sees D_casa only through products and ||D||_F^2 computed from its
    pieces; both must be those of the dense update (each branch of the operator, and a drift
    held as a product, a target given as distillation LoRAs)."""
    from casa_core.factorization import LowRank, dense
    from casa_core.methods.casa import update_operator

    Ws, Wt, B, A = _layer(11, *shape, r=8)
    drift = None
    if low_rank:
        g = torch.Generator().manual_seed(12)
        drift = LowRank(torch.randn(shape[0], 6, generator=g) * 0.05, torch.randn(6, shape[1], generator=g) * 0.05)
    a = analyze("x", Ws.float(), Wt.float(), B.float(), A.float(), 0.5, drift=drift)
    st, lo = a.pair, a.lora
    assert isinstance(st.D_fft, LowRank) == low_rank
    assert (st.U is None) == (max(shape) > min(shape))   # tall layers never form U
    arb = arbitrate(lo.C_lora, a.C_fft, st.sigma, head_size(st.sigma, st.square, 0.9),
                    TransferSettings.of(tau=tau, q_dom=q_dom).params)
    op = update_operator(st, lo, a.C_fft, arb.C_casa - (lo.C_lora - a.C_fft), arb.rowdom, arb.coldom)
    if st.square:   # the dominant rows and the dominant columns, each its own term
        assert len(op.terms) == 4
    D = op.dense().double()
    # the same update, straight from the rule: U C_casa V^T (+ the complement term when tall)
    U = st.U if st.U is not None else st.Ws @ st.Vsi
    ref = U.double() @ arb.C_casa.double() @ st.V.double().T
    D_fft = dense(st.D_fft).double()
    if st.tall:
        assert (0 < int(arb.coldom.sum()) < st.V.shape[1]) == (tau > 1)    # some columns dominant, or all
        Vc = st.V[:, arb.coldom].double()
        Dc = D_fft @ Vc @ Vc.T
        ref += Dc - U.double() @ (U.double().T @ Dc)
    ref += (lo.up.double() @ lo.down.double() - D_fft
            - U.double() @ (lo.C_lora - a.C_fft).double() @ st.V.double().T)
    assert float((D - ref).norm() / ref.norm()) < 1e-5
    assert op.sq_norm() == pytest.approx(float((D ** 2).sum()), rel=1e-5)
    g = torch.Generator().manual_seed(0)
    Om = torch.randn(D.shape[1], 5, generator=g)
    Q = torch.randn(D.shape[0], 5, generator=g)
    assert torch.allclose(op.mm(Om).double(), D @ Om.double(), atol=1e-5 * float(D.abs().max()) * D.shape[1])
    assert torch.allclose(op.rmm(Q).double(), D.T @ Q.double(), atol=1e-5 * float(D.abs().max()) * D.shape[0])


def test_parallel_layers_match_one_at_a_time(tmp_path):
    """Two layers side by side (each on its own threads) give the same conversion as one at a
    time on all cores, up to float32 rounding; and the same bytes when run again."""
    d = demo_inputs()
    conv = Conversion.open(d["base"], d["target"], d["lora"])
    outs = {}
    for name, workers in [("one", 1), ("two", 2), ("two-again", 2)]:
        outs[name] = tmp_path / f"{name}.safetensors"
        conv.convert(outs[name], TransferSettings(), RunOptions(device="cpu", view_size=0, workers=workers))
    assert outs["two"].read_bytes() == outs["two-again"].read_bytes()
    one, two = f.read_updates(outs["one"]), f.read_updates(outs["two"])
    assert set(one) == set(two)
    for k in one:
        assert torch.allclose(one[k], two[k], atol=1e-4 * float(one[k].abs().max())), k


def test_workers_option_is_checked():
    with pytest.raises(Exception, match="workers must be a positive whole number"):
        RunOptions(workers=0).validate()


def test_squared_norm_is_accurate_in_float32():
    """||D||_F^2 of the factorization's energy figures: float32 sums, float64-close."""
    from casa_core.factorization import sq_norm

    g = torch.Generator().manual_seed(5)
    a = torch.randn(3000, 2000, generator=g) * 1e-3 + 2e-3
    exact = float((a.double() ** 2).sum())
    assert abs(sq_norm(a) - exact) <= 1e-6 * exact
    assert abs(sq_norm(a.T) - exact) <= 1e-6 * exact


def test_column_norms_of_a_drift():
    """The squared column norms a rectangular layer's update reads from D_fft V: float64-close from a
    float32 matrix, and from the factors of one held as a product."""
    from casa_core.factorization import LowRank, column_sq_norms

    g = torch.Generator().manual_seed(6)
    a = torch.randn(9000, 40, generator=g) * 1e-3 + 2e-3
    exact = (a.double() ** 2).sum(0)
    assert torch.allclose(column_sq_norms(a), exact, rtol=1e-12)
    P, Q = torch.randn(50, 3, generator=g, dtype=torch.float64), torch.randn(3, 20, generator=g, dtype=torch.float64)
    L, mask = LowRank(P, Q), torch.arange(20) % 3 == 0
    assert torch.allclose(L.column_sq_norms(), ((P @ Q) ** 2).sum(0))
    assert torch.allclose(L[:, mask].dense(), (P @ Q)[:, mask])


@pytest.mark.parametrize("settings", [TransferSettings(), TransferSettings.of(tau=0.2, q_dom=0.3, q_act=0.6)],
                         ids=["defaults", "other-thresholds"])
def test_square_layer_analysed_for_its_thresholds_concludes_the_same(settings):
    """Given the thresholds, a square layer's C_fft is computed only where the rule reads
    it; the conversion, the figures and the views are those of the full analysis."""
    Ws, Wt, B, A = (t.float() for t in _layer(13, 200, 200, r=6))
    full = analyze("x", Ws, Wt, B, A, 0.8)
    part = analyze("x", Ws, Wt, B, A, 0.8, settings=settings)
    assert full.partial is None and part.partial is settings.params
    assert int((part.C_fft == 0).sum()) > 0.2 * part.C_fft.numel()   # most of the tail was skipped
    a, b = conclude(full, settings, 8, 32), conclude(part, settings, 8, 32)
    assert a.diagnostics == dataclasses.replace(b.diagnostics, threshold=a.diagnostics.threshold)
    assert a.diagnostics.threshold == pytest.approx(b.diagnostics.threshold, rel=1e-6)
    assert torch.allclose(a.up @ a.down, b.up @ b.down, atol=1e-5 * float((a.up @ a.down).abs().max()))
    for view in ("full", "top", "clustered"):
        va, vb = getattr(a.views, view), getattr(b.views, view)
        for name in ("c_lora", "c_fft", "c_casa"):
            x, y = getattr(va, name), getattr(vb, name)
            assert np.allclose(x, y, atol=1e-5 * np.abs(x).max()), (view, name)
    with pytest.raises(ValueError, match="other thresholds"):
        conclude(part, TransferSettings.of(q_dom=0.9), 8, 0)
    conclude(part, settings.with_(q_act=0.5), 8, 0)   # the capping quantile alone may change


def test_split_eigensolver_matches_numpy():
    """lapack.eigh (float64 tridiagonal problem, float32 back-transformation) against numpy's
    float64 eigh, on a spectrum with near-degenerate groups like trained weights'."""
    from casa_core import lapack

    if lapack.eigh is None:
        pytest.skip("numpy's OpenBLAS (LAPACKE) is not found here: the engine uses numpy.linalg.eigh")
    g = torch.Generator().manual_seed(4)
    n = 300
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.arange(1, n + 1, dtype=torch.float64) ** -0.8
    lam[50:60] = lam[50] * (1 + 1e-7 * torch.arange(10))       # a near-degenerate group
    G = ((q * lam) @ q.T).numpy()
    got_lam, got_V = lapack.eigh(G)
    ref_lam, ref_V = np.linalg.eigh(G)
    assert got_V.dtype == np.float32
    assert np.allclose(got_lam, ref_lam, rtol=0, atol=1e-13)
    V = got_V.astype(np.float64)
    assert np.abs(V.T @ V - np.eye(n)).max() < 2e-6
    assert np.abs(G @ V - V * got_lam).max() < 1e-6              # eigenpairs to float32 rounding
    apart = np.r_[True, np.diff(ref_lam) > 1e-4][:, None] & np.r_[np.diff(ref_lam) > 1e-4, True][:, None]
    overlap = np.abs((V.T @ ref_V).diagonal())[apart[:, 0]]
    assert overlap.min() > 1 - 1e-6                               # separated vectors are the same


def test_basis_without_the_split_eigensolver(monkeypatch):
    """Where numpy's OpenBLAS is missing, numpy.linalg.eigh gives the same basis."""
    from casa_core import lapack
    from casa_core.spectral import thin_svd

    Ws, _, _, _ = (t.float() for t in _layer(17, 120, 80))
    U1, s1, V1, _ = thin_svd(Ws, exact=False)
    monkeypatch.setattr(lapack, "eigh", None)
    U2, s2, V2, solver2 = thin_svd(Ws, exact=False)
    assert solver2 == "numpy.linalg.eigh (float64)"
    assert torch.allclose(s1, s2, rtol=1e-6) and torch.allclose(V1, V2, atol=1e-5)
    assert torch.allclose(U1, U2, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_select_is_torch_where_bit_for_bit(dtype):
    """The arbitration's branch-free selection gives torch.where's values, signed zeros and infinities too."""
    from casa_core.arbitration import select

    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(200, 300, generator=g, dtype=dtype), torch.randn(200, 300, generator=g, dtype=dtype)
    a[0, :4] = torch.tensor([-0.0, 0.0, float("inf"), -float("inf")], dtype=dtype)
    b[0, :4] = torch.tensor([0.0, -0.0, -1.0, 2.0], dtype=dtype)
    mask = torch.rand(200, 300, generator=g) < 0.4
    mask[0, :2] = torch.tensor([True, False])
    got, want = select(mask, a, b), torch.where(mask, a, b)
    assert got.dtype == dtype and torch.equal(got.view(torch.uint8), want.view(torch.uint8))
