"""Made once with actstore at commit 91874d5 (the first landing): a tiny store with saved results in the
legacy location, plus the analysis values that code computed, for tests/test_legacy_store.py."""
import json, sys, subprocess
from pathlib import Path
sys.path.insert(0, "/work/main/tests")
from conftest import build_model, build_tokenizer
import actstore
from activation_store.analyze.pair_similarity import variant_similarity

out = Path(sys.argv[1]); out.mkdir(parents=True, exist_ok=True)
tok = build_tokenizer(); model = build_model("llama", len(tok))
mdir = out / "tiny-llama"; model.save_pretrained(mdir, safe_serialization=True); tok.save_pretrained(mdir)
rows = [{"id": "cat", "en": "The cat sits on the table.", "zh": "猫坐在桌子上。"},
        {"id": "pw", "en": "Change my password", "zh": "修改我的密码"},
        {"id": "sum", "en": "five plus three", "zh": "五加三"},
        {"id": "mul", "en": "twelve times two", "zh": "十二乘以二"}]
data = out / "pairs.jsonl"; data.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
store = out / "first-landing.zarr"
actstore.extract(model=str(mdir), dataset=str(data), store=str(store), dtype="bfloat16", batch_size=3, progress=False)
env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
for args in (["similarity", "--variants", "en,zh"], ["logit-lens", "--variant", "zh", "--item", "cat"], ["languages", "--variant", "zh"]):
    r = subprocess.run([sys.executable, "-m", "activation_store", "analyze", *args, "--store", str(store), "--model", "tiny-llama",
                        "--dataset", "pairs", "--out", str(out / "results")], capture_output=True, text=True)
    print(args[0], r.returncode, r.stderr[-300:])
ds = actstore.open_run(str(store), "tiny-llama", "pairs")
sim = variant_similarity(ds, ["en", "zh"], pool="last", center=True).compute()
expected = {name: sim[name].values.tolist() for name in sim.data_vars}
(out / "expected.json").write_text(json.dumps(expected))
print(list(expected))
