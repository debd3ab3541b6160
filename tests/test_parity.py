"""The parity suite on Transformers, llama.cpp and MLX and two quantizations of tiny-llama, then `report --parity`:
the float32 backends agree with Transformers within the tolerance the backend tests use, and the 8-bit files show
their drift (vLLM's parity runs on the engine its CLI test starts: tests/test_vllm_backend.py). The probe set ships
with smallbench."""

from __future__ import annotations

import pandas as pd

from smallbench import parity
from tests.conftest import require, run_cli

for module, extra in (("llama_cpp", "llama-cpp"), ("mlx_lm", "mlx")):
    require(module, extra)


def test_four_backends_agree_and_quantized_weights_drift(tmp_path):
    out = str(tmp_path / "results")
    for args in (["-b", "transformers,mlx", "--dtype", "float32"], ["-b", "llama-cpp", "--quant", "F32,Q8_0"],
                 ["-b", "mlx", "--quant", "8bit"]):
        res = run_cli("run", "-s", "parity", *args, "-o", out, cwd=tmp_path, timeout=900)
        assert res.returncode == 0, res.stdout + res.stderr
    res = run_cli("report", out, "--parity", "--format", "csv", "--out", str(tmp_path / "parity.csv"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(tmp_path / "parity.csv", keep_default_na=False)
    rows = {(r["backend"], r["quant"]): r for r in df.to_dict("records")}
    assert "key" not in df.columns and len(rows) == 4
    exact = [rows[("llama-cpp", "F32")], next(r for (b, q), r in rows.items() if b == "mlx" and q != "8bit")]
    for r in exact:  # the float32 engines: the backend tests' tolerance, the same greedy path, the same tokens
        assert str(r["within tolerance"]) == "True" and r["max |Δ loglik|"] < parity.TOLERANCE, r
        assert r["greedy prefix"] == "32 of 32" and r["tokenizer"] == "4 of 4 prompts"
    for key, tol in ((("llama-cpp", "Q8_0"), 0.5), (("mlx", "8bit"), 0.5)):  # quantized: drift, bounded
        r = rows[key]
        assert parity.TOLERANCE < r["max |Δ loglik|"] < tol and str(r["within tolerance"]) == "False", r
    table = run_cli("report", out, "--parity", cwd=tmp_path)
    assert "parity against transformers" in table.stdout and "drift" in table.stdout


def test_the_probe_set_is_package_data_with_a_stable_hash():
    assert parity.PROMPTS and parity.PROBES["continuations"] and len(parity.PROBE_HASH) == 16
