"""The shape of the core: methods behind one seam, state split by dependency, one conversion
object, no import cycles, messages that name settings rather than CLI flags."""

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from casa_core import cli, layers, methods
from casa_core.conversion import Conversion, analyse_layer
from casa_core.errors import CasaError
from casa_core.layers import analyse_pair
from casa_core.methods.base import LayerInput, MethodParams, param
from casa_core.resources import demo_inputs
from casa_core.settings import RunOptions, TransferSettings

CORE = Path(__file__).resolve().parents[2] / "casa_core"


def test_no_import_cycles_in_the_core():
    """Every import, also those inside functions, counted: the module graph is acyclic."""
    import grimp

    graph = grimp.build_graph("casa_core")
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(edges.get(m, ())):
            if state.get(n) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(n):] + [n]))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph.modules):
        if m not in state:
            visit(m)


def test_core_messages_name_no_cli_flags():
    """CasaError texts speak of settings; only the CLI turns a setting into its flag."""
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        if path.name == "cli.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "CasaError":
                for arg in node.args:
                    for c in ast.walk(arg):
                        if isinstance(c, ast.Constant) and isinstance(c.value, str) and "--" in c.value:
                            offenders.append(f"{path.relative_to(CORE)}:{node.lineno}: {c.value!r}")
    assert not offenders, offenders


def test_registry_holds_casa_and_direct_and_drives_the_cli(capsys):
    assert methods.names()[:2] == ("casa", "direct")
    assert [p.name for p in methods.get("casa").Params.describe()] == ["tau", "q_dom", "q_act", "energy"]
    parser = cli.build_parser()
    convert = parser._subparsers._group_actions[0].choices["convert"]
    method_flag = next(a for a in convert._actions if a.dest == "method")
    assert tuple(method_flag.choices) == methods.names()
    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "casa:" in out and "direct:" in out and "--q-dom" in out and "0.85" in out


def test_unknown_method_and_foreign_parameters_are_refused(capsys, tmp_path):
    with pytest.raises(CasaError, match="unknown method 'nope'"):
        TransferSettings("nope")
    code = cli.main(["convert", "--demo", "--method", "direct", "--tau", "0.3", "-o", str(tmp_path / "o.st")])
    err = capsys.readouterr().err
    assert code == 2 and "--tau does not apply to --method direct" in err
    assert not (tmp_path / "o.st").exists()
    with pytest.raises(CasaError, match="q_dom must lie in"):
        TransferSettings.of("casa", q_dom=2.0)


def test_settings_round_trip_and_switch_method():
    s = TransferSettings.of("casa", tau=0.3)
    assert s.to_dict() == {"method": "casa", "tau": 0.3, "q_dom": 0.5, "q_act": 0.85, "energy": 0.9}
    assert TransferSettings.from_dict(s.to_dict()) == s
    assert s.with_(method="direct").to_dict() == {"method": "direct"}
    assert s.with_(method="direct").with_(method="casa") == TransferSettings()


@dataclass(frozen=True)
class HalfParams(MethodParams):
    share: float = param(0.5, "share of the LoRA's update kept", minimum=0.0, maximum=1.0)


class HalfMethod:
    """A toy method: the LoRA's update times ``share`` (a test of the seam, not a product)."""
    name = "half-test"
    title = "scaled reuse (test)"
    label = "Half (test)"
    Params = HalfParams
    uses_models = False

    def analyse(self, layer, pair, params, *, spectra=False):
        return layer

    def conclude(self, layer, settings, rank, view_size):
        direct = methods.get("direct").conclude(
            LayerInput(layer.name, layer.B, layer.A, layer.scale * settings.params.share), settings, rank, view_size)
        return direct


@pytest.fixture
def half_method():
    methods.register(HalfMethod())
    yield
    del methods._REGISTRY["half-test"]


def test_a_new_method_is_one_registration(half_method, tmp_path, capsys):
    """Registered, a method is offered by the CLI (with its parameter flag) and runs end to end."""
    out = tmp_path / "half.safetensors"
    report = tmp_path / "r.json"
    assert cli.main(["convert", "--demo", "--method", "half-test", "--share", "0.25", "-q", "--device", "cpu",
                     "-o", str(out), "--report", str(report)]) == 0
    import json

    rep = json.loads(report.read_text())
    assert rep["settings"] == {"method": "half-test", "share": 0.25}
    d = demo_inputs()
    ref = tmp_path / "direct.safetensors"
    assert cli.main(["convert", "--demo", "--method", "direct", "-q", "--device", "cpu", "-o", str(ref)]) == 0
    from tests.core import factories as f

    got, want = f.read_updates(out), f.read_updates(ref)
    assert set(got) == set(want) and d["lora"].exists()
    for k in want:
        assert torch.allclose(got[k], 0.25 * want[k], atol=1e-6 * float(want[k].abs().max())), k


def test_one_pair_state_serves_several_loras():
    """The pair's analysis depends on base and target only: two LoRAs concluded on one PairState
    give exactly what each gets from an analysis of its own."""
    g = torch.Generator().manual_seed(3)
    for m, n in ((64, 64), (96, 48), (48, 96)):
        Ws = torch.randn(m, n, generator=g) / n ** 0.5
        Wt = Ws + 0.05 * torch.randn(m, n, generator=g) / n ** 0.5
        loras = [(torch.randn(m, 4, generator=g) * 0.1, torch.randn(4, n, generator=g) * 0.1) for _ in range(2)]
        casa = methods.get("casa")
        s = TransferSettings()
        pair = analyse_pair("x", Ws, Wt)
        for B, A in loras:
            shared = casa.conclude(casa.analyse(LayerInput("x", B, A, 0.5), pair, s.params), s, 4, None)
            alone = casa.conclude(analyse_layer("x", Ws, Wt, B, A, 0.5, params=s.params), s, 4, None)
            assert torch.equal(shared.up, alone.up) and torch.equal(shared.down, alone.down)


def test_rearbitration_reuses_the_kept_analysis(monkeypatch):
    d = demo_inputs()
    conv = Conversion.open(d["base"], d["target"], d["lora"], layers=r"blocks\.0\.self_attn\.(q|k)$")
    options = RunOptions(device="cpu", view_size=16, spectra=True)
    conv.run(TransferSettings(), options)
    calls = []
    real = layers.analyse_pair
    monkeypatch.setattr("casa_core.conversion.analyse_pair", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    module = conv.plan.layers[0].module
    first = conv.rearbitrate(module, TransferSettings.of(tau=0.2), options)
    again = conv.rearbitrate(module, TransferSettings.of(tau=0.9, q_act=0.5), options)
    assert calls == [module]                     # one analysis, two conclusions
    assert conv.options.overrides[module] == TransferSettings.of(tau=0.9, q_act=0.5)
    assert conv.results[module] is again and first.diagnostics != again.diagnostics
    conv.rearbitrate(module, TransferSettings(), options)   # back to the run's settings: no override
    assert module not in conv.options.overrides


@pytest.mark.parametrize("precision,solver", [("float64", "torch.linalg.svd (float64)"),
                                              ("auto", None)])
def test_report_names_the_solver_that_ran(tmp_path, precision, solver):
    from casa_core import lapack

    d = demo_inputs()
    conv = Conversion.open(d["base"], d["target"], d["lora"])
    rep = conv.convert(tmp_path / "o.safetensors", TransferSettings(),
                       RunOptions(device="cpu", precision=precision, view_size=0)).to_dict()
    want = solver or ("LAPACKE dsytrd+dstedc (float64), sormtr (float32)" if lapack.eigh is not None
                      else "numpy.linalg.eigh (float64)")
    assert rep["machine"]["eigensolver"] == want


def test_a_run_leaves_the_thread_count_as_it_found_it(tmp_path):
    d = demo_inputs()
    before = torch.get_num_threads()
    conv = Conversion.open(d["base"], d["target"], d["lora"])
    seen = []
    conv.run(TransferSettings(), RunOptions(device="cpu", view_size=0, workers=2),
             on_result=lambda i, n, r: seen.append(torch.get_num_threads()))
    assert torch.get_num_threads() == before
    conv.run(TransferSettings(), RunOptions(device="cpu", view_size=0, workers=1),
             on_result=lambda i, n, r: seen.append(torch.get_num_threads()))
    assert seen[-1] == before   # one worker: the process's own setting, untouched
