"""The methods beyond the rule (restore, the paper's ablations, projection), what a converted layer
does (LayerEffect), the auto rank, and several methods in one pass."""

import json

import pytest
import torch

from casa_core import cli, layers, methods
from casa_core.ablation import Ablation
from casa_core.arbitration import arbitrate
from casa_core.conversion import Conversion, analyse_layer
from casa_core.ranks import AutoRank
from casa_core.resources import demo_inputs
from casa_core.settings import RunOptions, TransferSettings, parse_rank
from casa_core.spectral import head_size

SHAPES = [(48, 48), (96, 40), (40, 96)]
NEW = ("restore", "casa-no-clusters", "casa-uniform", "casa-no-capping", "projection")


def _layer(seed, m, n, r=4, drift=0.08):
    g = torch.Generator().manual_seed(seed)
    q1, _ = torch.linalg.qr(torch.randn(m, m, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    p = min(m, n)
    Ws = (q1[:, :p] * torch.arange(1, p + 1, dtype=torch.float64) ** -0.7) @ q2[:, :p].T
    Wt = Ws + drift * torch.randn(m, n, generator=g, dtype=torch.float64) / n ** 0.5
    B = torch.randn(m, r, generator=g, dtype=torch.float64) * 0.1
    A = torch.randn(r, n, generator=g, dtype=torch.float64) * 0.1
    return Ws, Wt, B, A


def _run(method, Ws, Wt, B, A, scale=0.5, rank="full", **params):
    s = TransferSettings.of(method, **params)
    a = analyse_layer("x", Ws, Wt, B, A, scale, method=method, params=s.params, dtype=torch.float64, exact=True)
    return methods.get(method).conclude(a, s, rank, None)


def _dense(res):
    return res.up.double() @ res.down.double()


def test_every_method_is_registered_and_offered(capsys):
    assert set(NEW) <= set(methods.names())
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name in NEW:
        assert f"{name}:" in out
    # each ablation takes the rule's parameters it still reads, and no other
    assert [p.name for p in methods.get("casa-no-clusters").Params.describe()] == ["q_dom", "q_act", "energy"]
    assert [p.name for p in methods.get("casa-uniform").Params.describe()] == ["tau", "q_act", "energy"]
    assert [p.name for p in methods.get("casa-no-capping").Params.describe()] == ["tau", "q_dom", "energy"]
    assert [p.name for p in methods.get("projection").Params.describe()] == ["energy"]


def test_a_flag_no_chosen_method_takes_is_refused(capsys, tmp_path):
    code = cli.main(["convert", "--demo", "--method", "casa-no-clusters", "--tau", "0.3", "-o", str(tmp_path / "o")])
    assert code == 2 and "--tau does not apply to --method casa-no-clusters" in capsys.readouterr().err
    code = cli.main(["convert", "--demo", "--method", "direct,restore", "--q-act", "0.3", "-o", str(tmp_path / "d/")])
    assert code == 2 and "--q-act does not apply" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("shape", SHAPES)
def test_restore_gives_base_plus_lora_on_the_target(shape):
    Ws, Wt, B, A = _layer(1, *shape)
    res = _run("restore", Ws, Wt, B, A)
    assert torch.allclose(Wt + _dense(res), Ws + 0.5 * B @ A, atol=1e-12)
    assert res.effect.lora_restored_share == 1.0 and res.effect.drift_undone == 1.0


@pytest.mark.parametrize("shape", SHAPES)
def test_uniform_never_restores(shape):
    Ws, Wt, B, A = _layer(2, *shape)
    st = analyse_layer("x", Ws, Wt, B, A, 0.5, method="casa-uniform", dtype=torch.float64, exact=True)
    s = TransferSettings.of("casa-uniform")
    k = head_size(st.pair.sigma, st.pair.square, 0.9)
    arb = arbitrate(st.lora.C_lora, st.C_fft, st.pair.sigma, k, s.params, Ablation(uniform=True))
    assert bool(arb.rowdom.all()) and bool(arb.coldom.all()) and bool(arb.capped.any())
    free = ~arb.capped
    assert torch.equal(arb.C_casa[free], st.lora.C_lora[free])      # never C_lora - C_fft
    res = methods.get("casa-uniform").conclude(st, s, "full", None)
    assert res.effect.lora_restored_share == 0.0 and res.diagnostics.dominant_share == pytest.approx(1.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_no_capping_caps_nothing(shape):
    """... and is the rule with a capping quantile no risk exceeds."""
    Ws, Wt, B, A = _layer(3, *shape)
    res = _run("casa-no-capping", Ws, Wt, B, A)
    assert res.diagnostics.n_capped == 0 and res.effect.lora_capped_share == 0.0
    same = _run("casa", Ws, Wt, B, A, q_act=1.0)
    assert torch.allclose(_dense(res), _dense(same), atol=1e-12)
    assert not torch.allclose(_dense(res), _dense(_run("casa", Ws, Wt, B, A)), atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_no_clusters_uses_singletons(shape):
    Ws, Wt, B, A = _layer(4, *shape)
    res = _run("casa-no-clusters", Ws, Wt, B, A)
    assert res.diagnostics.n_clusters == res.diagnostics.k
    # with a tau no pair of directions exceeds, CASA's clusters are singletons too
    assert torch.allclose(_dense(res), _dense(_run("casa", Ws, Wt, B, A, tau=1e30)), atol=1e-12)


def _projector(M, k):
    U, _, Vh = torch.linalg.svd(M, full_matrices=False)
    return U[:, :k] @ U[:, :k].T, Vh[:k].T @ Vh[:k]


@pytest.mark.parametrize("shape", SHAPES)
def test_projection_is_its_definition(shape):
    """Against the definition written with explicit m x m and n x n projectors."""
    Ws, Wt, B, A = _layer(5, *shape)
    square = shape[0] == shape[1]
    sv = torch.linalg.svdvals
    ks, kt = head_size(sv(Ws), square, 0.9), head_size(sv(Wt), square, 0.9)
    PU, PV = _projector(Ws, ks)
    QU, QV = _projector(Wt, kt)
    if not square:   # k = p: the projector of the smaller side is the identity
        PV, QV = (torch.eye(shape[1], dtype=torch.float64),) * 2 if shape[0] > shape[1] else (PV, QV)
        PU, QU = (torch.eye(shape[0], dtype=torch.float64),) * 2 if shape[0] < shape[1] else (PU, QU)
    D = 0.5 * B @ A
    Im, In = torch.eye(shape[0], dtype=torch.float64), torch.eye(shape[1], dtype=torch.float64)
    want = QU @ (PU @ D @ PV) @ QV + (Im - QU) @ ((Im - PU) @ D @ (In - PV)) @ (In - QV)
    res = _run("projection", Ws, Wt, B, A)
    assert torch.allclose(_dense(res), want, atol=1e-12)
    undone = float(((D - _dense(res)) * (Wt - Ws)).sum() / (Wt - Ws).square().sum())
    assert res.effect.drift_undone == pytest.approx(undone, abs=1e-9)


def test_only_projection_decomposes_the_target(monkeypatch):
    calls = []
    real = layers.PairState.target_basis
    monkeypatch.setattr(layers.PairState, "target_basis", lambda self: calls.append(self.name) or real(self))
    d = demo_inputs()
    conv = Conversion.open(d["base"], d["target"], d["lora"], layers=r"blocks\.0\.")
    opts = RunOptions(device="cpu", view_size=0)
    for name in methods.names():
        if name != "projection":
            conv.run(TransferSettings.of(name), opts)
    assert calls == []
    conv.run(TransferSettings.of("projection"), opts)
    assert sorted(calls) == sorted(lp.module for lp in conv.plan.layers)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method", ["casa", "casa-uniform", "casa-no-clusters", "casa-no-capping"])
def test_effect_figures_are_what_the_update_does(shape, method):
    """Shares add up to 1; drift undone is <D_lora - D, D_fft> / ||D_fft||^2 of the written update."""
    Ws, Wt, B, A = _layer(6, *shape)
    res = _run(method, Ws, Wt, B, A, rank="full")
    e = res.effect
    assert e.lora_restored_share + e.lora_capped_share + e.lora_reused_share == pytest.approx(1.0)
    D_fft = Wt - Ws
    want = float(((0.5 * B @ A - _dense(res)) * D_fft).sum() / D_fft.square().sum())
    assert e.drift_undone == pytest.approx(want, abs=1e-9)
    # partial routing (the narrowed analysis of square layers) gives the same figure
    full = methods.get(method).conclude(
        analyse_layer("x", Ws, Wt, B, A, 0.5, method=method, dtype=torch.float64, exact=True),
        TransferSettings.of(method), "full", None)
    assert full.effect.drift_undone == pytest.approx(e.drift_undone, abs=1e-9)


def test_direct_reuses_everything_and_undoes_nothing():
    Ws, Wt, B, A = _layer(7, 48, 48)
    res = _run("direct", Ws, Wt, B, A)
    assert (res.effect.lora_reused_share, res.effect.drift_undone) == (1.0, 0.0)


# ---- the rank ------------------------------------------------------------------

def test_rank_text():
    assert parse_rank("auto") == AutoRank(0.9) and parse_rank("auto:0.75", 64) == AutoRank(0.75, 64)
    for bad in ("auto:x", "auto:0", "auto:1.2", "autox"):
        with pytest.raises(Exception, match="rank"):
            parse_rank(bad)
    with pytest.raises(Exception, match="only to the auto rank"):
        parse_rank("16", 32)


@pytest.mark.parametrize("fraction,cap", [(0.95, None), (0.999, 10), (0.5, None)])
def test_auto_rank_meets_its_fraction_or_hits_the_cap(tmp_path, fraction, cap):
    d = demo_inputs()
    conv = Conversion.open(d["base"], d["target"], d["lora"])
    rep = conv.convert(tmp_path / "o.safetensors", TransferSettings(),
                       RunOptions(device="cpu", view_size=0, rank=AutoRank(fraction, cap))).to_dict()
    for name, res in conv.results.items():
        p = min(res.shape)
        top = min(p, cap or 4 * res.rank_in)
        assert res.rank_in <= res.rank_out <= top or res.rank_out == top
        if res.rank_capped:
            assert res.rank_out == top and res.energy_kept < fraction
        else:
            assert res.energy_kept >= fraction - 1e-9
            if res.rank_out > res.rank_in:    # the smallest rank that does
                assert res.energy_curve[res.rank_out - 2] < fraction
        # the energy kept is what the written factors keep of the dense update
        assert rep["layers"][name]["rank_out"] == res.rank_out
        assert rep["layers"][name]["rank_capped"] == res.rank_capped
    if cap == 10:
        assert any(r.rank_capped for r in conv.results.values())
    if fraction == 0.5:   # never below the input's rank
        assert all(r.rank_out == r.rank_in for r in conv.results.values())
    assert rep["output"]["bytes"] == (tmp_path / "o.safetensors").stat().st_size


def test_auto_rank_energy_is_the_factors_energy():
    Ws, Wt, B, A = _layer(8, 300, 300, r=8, drift=0.3)
    for exact in (True, False):
        s = TransferSettings()
        a = analyse_layer("x", Ws.float(), Wt.float(), B.float(), A.float(), 1.0, params=s.params, exact=exact)
        res = methods.get("casa").conclude(a, s, AutoRank(0.8, 40), None)
        full = methods.get("casa").conclude(a, s, "full", None)
        D = _dense(full)
        got = 1 - float((D - _dense(res)).square().sum() / D.square().sum())
        assert got == pytest.approx(res.energy_kept, abs=2e-3)
        assert res.energy_kept >= 0.8 - 1e-6 or res.rank_capped


# ---- several methods in one pass --------------------------------------------------

def test_several_methods_in_one_pass_write_the_single_runs_bytes(tmp_path, monkeypatch):
    from casa_core import conversion

    calls = []
    real = conversion.analyse_pair
    monkeypatch.setattr(conversion, "analyse_pair", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    report, table = tmp_path / "cmp.json", tmp_path / "cmp.csv"
    assert cli.main(["convert", "--demo", "--method", "casa,direct,projection", "--device", "cpu", "-q",
                     "-o", str(tmp_path / "out") + "/", "--report", str(report), "--table", str(table)]) == 0
    d = demo_inputs()
    n_layers = len(Conversion.open(d["base"], d["target"], d["lora"]).plan.layers)
    assert len(calls) == n_layers             # one decomposition per layer, shared by the three methods
    for m in ("casa", "direct", "projection"):
        single = tmp_path / f"{m}.safetensors"
        assert cli.main(["convert", "--demo", "--method", m, "--device", "cpu", "-q", "-o", str(single)]) == 0
        assert (tmp_path / "out" / f"lora.{m}.safetensors").read_bytes() == single.read_bytes(), m
    rep = json.loads(report.read_text())
    assert [r["method"] for r in rep["summary"]] == ["casa", "direct", "projection"]
    assert len(rep["table"]) == 3 * n_layers and set(rep["reports"]) == {"casa", "direct", "projection"}
    rows = table.read_text().splitlines()
    assert rows[0].startswith("layer,method,") and len(rows) == 1 + 3 * n_layers + 3
    assert cli.main(["figures", str(report)]) == 0


def test_a_failed_comparison_leaves_nothing(tmp_path, capsys):
    d = demo_inputs()
    out = tmp_path / "out"
    code = cli.main(["convert", "--demo", "--method", "casa,direct", "--device", "cpu", "-q", "-o", str(out) + "/",
                     "--report", str(d["lora"])])
    assert code == 2 and not out.exists()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("method,flag", [("casa-no-clusters", "singleton_clusters"), ("casa-uniform", "uniform"),
                                         ("casa-no-capping", "no_capping")])
def test_ablations_match_the_straightforward_dense_rule(shape, method, flag):
    """Against benchmarks/naive.py (full square SVD factors, dense m x n grids) with the ablation's flag."""
    from benchmarks.naive import naive_update

    Ws, Wt, B, A = _layer(9, *shape)
    want = naive_update(Ws, Wt, B, A, 0.5, dtype=torch.float64, **{flag: True})
    got = _dense(_run(method, Ws, Wt, B, A))
    assert torch.allclose(got, want, atol=1e-10 * float(want.abs().max()))
    assert not torch.allclose(got, naive_update(Ws, Wt, B, A, 0.5, dtype=torch.float64), atol=1e-8)


def test_several_methods_want_an_output_folder(tmp_path, capsys):
    f = tmp_path / "file.safetensors"
    f.write_bytes(b"x")
    code = cli.main(["convert", "--demo", "--method", "casa,direct", "--device", "cpu", "-q", "-o", str(f)])
    assert code == 2 and "is a file" in capsys.readouterr().err and f.read_bytes() == b"x"


def test_the_energy_curve_and_its_bound_where_only_the_leading_values_are_known():
    """A randomized factorization knows its leading singular values only: the curve it gives is below
    the true one, and ranks.upper_bound above it, so rank_at_least never asks for more than is needed."""
    from casa_core import ranks
    from casa_core.factorization import factorize

    g = torch.Generator().manual_seed(11)
    m, n = 700, 500
    q1, _ = torch.linalg.qr(torch.randn(m, n, generator=g, dtype=torch.float64))
    q2, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    D = (q1 * torch.arange(1, n + 1, dtype=torch.float64) ** -0.4) @ q2.T
    fac = factorize(D.float(), 32, exact=False)
    s2 = torch.linalg.svdvals(D) ** 2
    true = (torch.cumsum(s2, 0) / s2.sum()).numpy()
    known = fac.curve
    # (the randomized factorization is held to 0.1% of the optimum, so is its curve)
    assert len(known) == 32 and (abs(known - true[:32]) < 1e-3).all()
    bound = ranks.upper_bound(known, n)
    assert len(bound) == n and (bound >= true - 1e-3).all() and bound[-1] <= 1.0
    for f in (0.5, 0.8, 0.95):
        need = int((true < f).sum()) + 1
        least = ranks.rank_at_least(known, f, 4, n)
        assert least is not None and least <= need
