"""Optional dependencies are found missing before any work starts, with the extra to install;
``glue`` works without the book-building tools; the benchmark code and records come with the
package."""
import json
import runpy
import sys
from pathlib import Path

import pytest

import effnet_tutorial as et
from effnet_tutorial import extras
from effnet_tutorial.cli import main

ROOT = Path(__file__).resolve().parents[1]


def hide(monkeypatch, *modules):
    """Make ``modules`` unimportable here, as if not installed (``find_spec`` gives None too)."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


def test_require_names_the_extra_and_the_alternative(monkeypatch):
    hide(monkeypatch, "pycocotools")
    with pytest.raises(extras.MissingDependency) as err:
        extras.require("pycocotools", purpose="COCO evaluation",
                       alternative="pass --val-split '' to train without evaluation")
    assert str(err.value) == ("COCO evaluation needs pycocotools: pip install 'effnet_tutorial[coco]' "
                              "(or pass --val-split '' to train without evaluation)")
    assert isinstance(err.value, ImportError)


def test_require_lists_every_missing_extra_once(monkeypatch):
    hide(monkeypatch, "timm", "effdet", "onnx")
    with pytest.raises(extras.MissingDependency, match=r"needs timm and effdet and onnx: "
                       r"pip install 'effnet_tutorial\[export,reference\]'"):
        extras.require("timm", "effdet", "onnx", purpose="This")


def test_require_passes_when_installed_and_rejects_unknown_names():
    extras.require("pycocotools", "timm", purpose="the tests")  # both are test requirements
    with pytest.raises(ValueError, match="not an optional dependency"):
        extras.require("numpyy", purpose="x")


def test_every_optional_module_has_an_extra_in_pyproject():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        pytest.skip("tomllib needs Python 3.11")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    names = {extra: {req.split(">")[0].split("=")[0].strip() for req in reqs}
             for extra, reqs in declared.items()}
    for module, (dist, extra) in extras.OPTIONAL.items():
        assert dist in names[extra], f"{dist} is not in the [{extra}] extra"
        assert dist in names["book"], f"{dist} is not in the [book] extra"


def test_train_without_pycocotools_stops_before_any_work(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "pycocotools")
    out = tmp_path / "run"
    code = main(["train", "--data", str(tmp_path / "no-such-data"), "--output", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert "COCO evaluation needs pycocotools: pip install 'effnet_tutorial[coco]'" in err
    assert "--val-split ''" in err
    assert not out.exists()  # nothing started: no output folder, not even the data was read


def test_train_without_evaluation_does_not_need_pycocotools(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "pycocotools")
    code = main(["train", "--data", str(tmp_path / "no-such-data"), "--output", str(tmp_path / "r"),
                 "--val-split", ""])
    assert code == 2 and "no split 'train'" in capsys.readouterr().err  # got past the check


def test_evaluate_without_pycocotools_stops_at_once(tmp_path, monkeypatch, capsys):
    hide(monkeypatch, "pycocotools")
    code = main(["evaluate", "--checkpoint", str(tmp_path / "none.pth"), "--data", str(tmp_path)])
    assert code == 2
    assert "pip install 'effnet_tutorial[coco]'" in capsys.readouterr().err


def test_export_without_onnx_names_the_export_extra(tmp_path, monkeypatch):
    from effnet_tutorial import export

    hide(monkeypatch, "onnx", "onnxruntime")
    model = et.create_model("efficientnet_b0", num_classes=3)
    with pytest.raises(extras.MissingDependency, match=r"effnet_tutorial\[export\]"):
        export.export_onnx(model, tmp_path / "m.onnx", 64)
    with pytest.raises(extras.MissingDependency, match=r"onnxruntime: pip install 'effnet_tutorial\[export\]'"):
        export.check_onnx(model, tmp_path / "m.onnx", 64)


def test_benchmark_without_references_names_the_reference_extra(monkeypatch):
    from effnet_tutorial.benchmark import command

    hide(monkeypatch, "effdet")
    with pytest.raises(extras.MissingDependency, match=r"effdet: pip install 'effnet_tutorial\[reference\]'"):
        command.run("smoke", threads=1, out=None)


def test_glue_without_myst_nb_prints_outside_ipython(monkeypatch, capsys):
    hide(monkeypatch, "myst_nb")
    et.glue("answer", 42)
    et.glue("hidden", 7, display=False)
    assert capsys.readouterr().out == "42\n"


def test_glue_without_myst_nb_writes_what_myst_nb_writes(monkeypatch):
    """In IPython, the fallback displays the same bundle and metadata as ``myst_nb.glue``."""
    from IPython.core.interactiveshell import InteractiveShell
    import IPython.display
    import myst_nb

    shell = InteractiveShell.instance()
    shown = []
    monkeypatch.setattr(IPython.display, "display",
                        lambda obj, raw=False, metadata=None: shown.append((obj, raw, metadata)))
    try:
        for display in (True, False):
            myst_nb.glue("x", 1.5, display=display)
            with monkeypatch.context() as m:
                hide(m, "myst_nb")
                et.glue("x", 1.5, display=display)
            assert shown[-1] == shown[-2]
        assert shown[-1][0] == {"application/papermill.record/text/plain": "1.5"}
        assert shown[-1][2]["scrapbook"] == {"name": "x", "mime_prefix": "application/papermill.record/"}
    finally:
        InteractiveShell.clear_instance()
        del shell


def test_training_record_ships_with_the_package():
    from effnet_tutorial.benchmark import list_records, load_record, records

    assert "train_d0_cpu" in list_records()
    record = load_record("train_d0_cpu")
    assert {r["impl"] for r in record["runs"]} == {"ours", "effdet"}
    assert records.MEASURED.is_relative_to(Path(et.__file__).resolve().parent)
    with pytest.raises(FileNotFoundError, match=r"records: .*train_d0_cpu"):
        load_record("no_such_record")


def test_bench_script_is_the_package_command(tmp_path, monkeypatch):
    """``benchmarks/bench.py`` runs the package's command with the repository's output file."""
    calls = []
    import effnet_tutorial.benchmark.command as command

    monkeypatch.setattr(command, "run", lambda *a, **kw: calls.append((a, kw)))
    monkeypatch.setattr(sys, "argv", ["bench.py", "--mode", "smoke", "--no-memory"])
    runpy.run_path(str(ROOT / "benchmarks" / "bench.py"), run_name="__main__")
    (mode, threads, out), kw = calls[0]
    assert mode == "smoke" and out == ROOT / "benchmarks" / "results" / "bench.json"
    assert kw["memory"] is False


def test_benchmark_json_round_trips_a_row():
    from dataclasses import asdict

    from effnet_tutorial.benchmark.timing import Row, format_table

    row = Row("b0 inference", "timm", 10.0, 20.0, 0.5, ours_runs=[10.0], ref_runs=[20.0],
              pair_quartiles=[0.5, 0.5])
    assert Row(**json.loads(json.dumps(asdict(row)))) == row
    assert "0.50" in format_table([row])
