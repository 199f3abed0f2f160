#!/usr/bin/env bash
# End-to-end checks of the llmrec binary, configs/ and launch/.
# Usage: test_cli.sh path/to/llmrec path/to/source
set -uo pipefail
bin=$(realpath "$1")
src=$(realpath "$2")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
# shellcheck source=cli_lib.sh
source "$src/tests/apps/cli_lib.sh"

# --version names every part of the build, and the BLAS in use.
"$bin" --version >version.txt 2>&1
expect "--version" version.txt '^llmrec [0-9]+\.[0-9]+\.[0-9]+ \(git ' '^LibTorch [0-9]' \
  '^BLAS (OpenBLAS|.*BLAS)' '^MPI Open MPI' '^CUDA (on|off), NCCL backend on \(loaded at run time\)$'

# make install's layout, staged with DESTDIR: the binary, the launcher that
# finds the binary beside it, the configs and the docs.
stage=$work/stage
if DESTDIR=$stage cmake --install "$(dirname "$bin")" --prefix /opt/llmrec >install.txt 2>&1; then
  p=$stage/opt/llmrec
  if [[ -x $p/bin/llmrec && -x $p/bin/llmrec-mpirun && -f $p/share/llmrec/configs/quickstart.yaml &&
        -f $p/share/llmrec/launch/slurm.sbatch && -f $p/share/doc/llmrec/serving.md && -f $p/share/doc/llmrec/README.md ]]; then
    ok "install: bin/llmrec, bin/llmrec-mpirun, share/llmrec/{configs,launch}, share/doc/llmrec"
  else
    find "$stage" -maxdepth 4 >install_tree.txt; fail "install: files missing" install_tree.txt
  fi
  (unset LLMREC_BIN; "$p/bin/llmrec-mpirun" -n 2 -o -- config -c "$p/share/llmrec/configs/quickstart.yaml" >inst_run.txt 2>&1)
  expect "install: llmrec-mpirun runs the installed llmrec on 2 ranks" inst_run.txt 'dir: "runs/quickstart"'
else
  fail "cmake --install" install.txt
fi

# The README's command table lists exactly the subcommands of --help.
"$bin" --help >help.txt 2>&1
help_cmds=$(awk '/^Subcommands:/ { on = 1; next } on && NF { print $1 }' help.txt | sort)
readme_cmds=$(grep -oE '^\| `llmrec [a-z]+' "$src/README.md" | awk '{ print $3 }' | sort -u)
if [[ -n $help_cmds && $help_cmds == "$readme_cmds" ]]; then
  ok "README's command table = llmrec --help ($(echo $help_cmds | wc -w) subcommands)"
else
  { echo "--help:"; echo "$help_cmds"; echo "README:"; echo "$readme_cmds"; } >help_cmp.txt
  fail "README's command table differs from llmrec --help" help_cmp.txt
fi

# Every shipped config validates.
for c in "$src"/configs/*.yaml; do
  if "$bin" config -c "$c" >cfg.txt 2>&1; then ok "config $(basename "$c") validates"; else fail "config $c" cfg.txt; fi
done

# A typo names the file, the line and the closest key; exit code 1.
printf 'run:\n  dir: x\ncomm:\n  timout_s: 3\n' >typo.yaml
"$bin" config -c typo.yaml >typo.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "unknown key" typo.txt "typo.yaml:4: unknown key 'comm.timout_s'; did you mean 'comm.timeout_s'\?" \
  || fail "unknown key: exit code $rc, expected 1" typo.txt

# Exit codes as the README's table gives them: usage errors 2 with CLI11's
# message, --help 0.
"$bin" config --bogus >usage.txt 2>&1; rc=$?
[[ $rc -eq 2 ]] && expect "an unknown option: exit code 2" usage.txt "bogus" || fail "--bogus: exit code $rc, expected 2" usage.txt
"$bin" train -c no_such_config.yaml >usage2.txt 2>&1; rc=$?
[[ $rc -eq 2 ]] && expect "a -c file that does not exist: exit code 2" usage2.txt "no_such_config.yaml" \
  || fail "train -c missing file: exit code $rc, expected 2" usage2.txt
"$bin" train --help >help_train.txt 2>&1; rc=$?
[[ $rc -eq 0 ]] && expect "train --help: exit code 0" help_train.txt "--dry-run" || fail "train --help: exit code $rc" help_train.txt
grep -q '^| 2 | a usage error' "$src/README.md" && grep -q '^| 1 | an error' "$src/README.md" \
  && ok "README documents exit codes 1 and 2" || fail "README's exit code table lacks 1 or 2" "$src/README.md"

# include: and --set, and the resolved output.
printf 'include: %s\nrun:\n  threads: 2\n' "$src/configs/quickstart.yaml" >child.yaml
"$bin" config -c child.yaml --set comm.timeout_s=7.5 >resolved.txt 2>&1
expect "include and --set" resolved.txt 'dir: "runs/quickstart"' 'threads: 2' 'timeout_s: 7.5'
"$bin" config --set comm.backend=gloo >bad_enum.txt 2>&1
expect "enum error names --set" bad_enum.txt "--set comm.backend=gloo: 'comm.backend' must be one of: auto, mpi, nccl"

# The rules between model keys and the LoRA target names, at `config` already; exit code 1.
"$bin" config -c "$src/configs/quickstart.yaml" --set model.dim=65 >dim65.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "config checks model.dim against the heads" dim65.txt "model.dim \\(65\\) must be divisible by model.user.heads \\(2\\)" \
  || fail "config model.dim=65: exit code $rc, expected 1" dim65.txt
"$bin" config -c "$src/configs/quickstart.yaml" --set model.lora.r=4 --set "model.lora.targets=[querry]" >querry.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "config checks the LoRA target names" querry.txt "model.lora.targets: LoRA target 'querry' matches no module" \
  || fail "config LoRA target querry: exit code $rc, expected 1" querry.txt
"$bin" train -c "$src/configs/quickstart.yaml" --stop-after 0 >stop0.txt 2>&1
rc=$?
[[ $rc -ne 0 ]] && expect "--stop-after 0 is refused" stop0.txt "stop-after" || fail "--stop-after 0: exit code $rc" stop0.txt

# The GPU path asked for on a machine (or build) without one: clear errors, exit 1.
"$bin" check --set run.dir=nogpu --set run.device=cuda >nogpu.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "run.device cuda without a GPU" nogpu.txt "run.device is cuda but LibTorch sees no GPU" \
  || fail "run.device cuda without a GPU: exit code $rc, expected 1" nogpu.txt
"$bin" check --set run.dir=nogpu --set comm.backend=nccl >nccl_cpu.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "comm.backend nccl on the CPU" nccl_cpu.txt "comm.backend nccl reduces GPU tensors: it needs run.device cuda" \
  || fail "comm.backend nccl on the CPU: exit code $rc, expected 1" nccl_cpu.txt

# docs/configuration.md carries exactly the schema the binary has.
"$bin" config --schema --markdown >schema.md
sed -n '/<!-- schema:begin -->/,/<!-- schema:end -->/p' "$src/docs/configuration.md" | sed '1d;$d' >doc_schema.md
if diff -u doc_schema.md schema.md >schema.diff; then ok "docs/configuration.md matches the schema"
else fail "docs/configuration.md is out of date: run tools/update_config_docs.sh" schema.diff; fi

# check under mpirun -np 2 through the launch script: exact collectives,
# run directory with resolved config, per-rank rank-tagged logs.
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- check -c "$src/configs/quickstart.yaml" \
  --set run.dir=run2 >check2.txt 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  expect "check -np 2" check2.txt '^llmrec check: 2 rank\(s\)' 'all collective checks passed' '^ +1 +'
  expect "check.json" run2/check.json '"ok": true' '"world_size": 2'
  expect "resolved config" run2/config.yaml 'timeout_s: 120'
  expect "rank 1 log file" run2/logs/rank-1.log '\[rank 1/2\] info llmrec'
  if grep -q '\[rank 1/2\] info' check2.txt; then fail "rank 1 printed info lines on the console" check2.txt
  else ok "console: rank 1 quiet at info"; fi
else
  fail "check -np 2 exited $rc" check2.txt
fi

# Three ranks, plain mpirun.
mpirun "${root[@]}" --oversubscribe -np 3 "$bin" check --set run.dir=run3 >check3.txt 2>&1 \
  && expect "check -np 3" check3.txt '^llmrec check: 3 rank\(s\)' 'all collective checks passed' \
  || fail "check -np 3" check3.txt

# Without mpirun: world size 1.
"$bin" check --set run.dir=run1 >check1.txt 2>&1 \
  && expect "check without mpirun" check1.txt '^llmrec check: 1 rank\(s\)' 'all collective checks passed' \
  || fail "check without mpirun" check1.txt

# The Slurm template, with mpirun inside a (simulated) allocation.
SLURM_NTASKS=2 SLURM_CPUS_PER_TASK=1 SLURM_JOB_ID=42 LLMREC_LAUNCHER=mpirun LLMREC_BIN=$bin \
  LLMREC_MPIRUN_EXTRA=--oversubscribe bash "$src/launch/slurm.sbatch" check --set run.dir=runs >slurm.txt 2>&1 \
  && expect "slurm template (mpirun)" slurm.txt 'job 42 .* 2 ranks x 1 threads' 'all collective checks passed' \
  || fail "slurm template" slurm.txt

# A fatal error on one rank ends every rank at once (no hang): rank 0
# cannot create the run directory while rank 1 waits in a barrier.
start=$(date +%s)
timeout 60 mpirun "${root[@]}" --oversubscribe -np 2 "$bin" check --set run.dir=/proc/llmrec-no >abort.txt 2>&1
rc=$?
took=$(( $(date +%s) - start ))
if [[ $rc -ne 0 && $rc -ne 124 && $took -lt 30 ]]; then
  expect "fatal error aborts all ranks" abort.txt 'cannot create run directory /proc/llmrec-no' 'aborting all ranks'
else
  fail "fatal error on rank 0: exit $rc after ${took}s (want non-zero, < 30 s)" abort.txt
fi

# synth -> prepare with the shipped quickstart config (paths overridden).
"$bin" synth -o shop --items 300 --users 200 --seed 5 >synth.txt 2>&1 \
  && expect "synth" synth.txt '^synth: 300 items \([0-9]+ cold' \
  && expect "synth catalogue header" shop/catalogue.csv '^item_id,title,description,category,brand,price,tags$' \
  || fail "synth" synth.txt
"$bin" synth -o shop2 --items 300 --users 200 --seed 5 >/dev/null 2>&1
if cmp -s shop/interactions.csv shop2/interactions.csv && cmp -s shop/catalogue.csv shop2/catalogue.csv; then
  ok "synth is deterministic for a seed"
else fail "synth differs between two runs with one seed"; fi
"$bin" synth -o shop3 --items 300 --users 200 --seed 5 --beta 0 >/dev/null 2>&1
if cmp -s shop/catalogue.csv shop3/catalogue.csv && ! cmp -s shop/interactions.csv shop3/interactions.csv \
   && grep -q '"beta": 0.0' shop3/synth.json; then
  ok "synth --beta 0: same catalogue, other choices, recorded in synth.json"
else fail "synth --beta 0 (catalogue must stay, interactions change, synth.json records beta 0)"; fi
pset=(--set data.interactions=shop/interactions.csv --set data.catalogue=shop/catalogue.csv --set data.dataset=ds.h5)
"$bin" prepare -c "$src/configs/quickstart.yaml" "${pset[@]}" >prepare.txt 2>&1 \
  && expect "prepare" prepare.txt 'interactions shop/interactions.csv: ([0-9]+) rows read, \1 kept, 0 skipped' \
       '^dataset: [0-9]+ users, 300 items' '-> ds.h5' \
  && expect "prepare report" ds.h5.report.json '"test_on_cold_items"' \
  || fail "prepare" prepare.txt
# eval on 2 ranks: the baselines and the shop's oracle, full ranking on the
# test split; a table on rank 0 and the result file with its protocol.
mpirun "${root[@]}" --oversubscribe -np 2 "$bin" eval -c "$src/configs/quickstart.yaml" "${pset[@]}" \
  --set eval.oracle_dir=shop --set run.dir=runeval --split test >eval.txt 2>&1 \
  && expect "eval -np 2" eval.txt '^llmrec eval: split test, 2 rank\(s\); [0-9]+ users evaluated' \
       '^popularity +0\.[0-9]{4} ' '^itemknn +0\.[0-9]{4} ' '^bpr +0\.[0-9]{4} ' '^oracle +0\.[0-9]{4} ' \
  && expect "eval result file" runeval/eval_test.json '"format": "llmrec-eval"' '"dataset_sha256": "[0-9a-f]{64}"' \
       '"ranking": "full ranking over 300 items, history excluded"' '"world_size": 2' \
  || fail "eval -np 2" eval.txt
# The swapped-history diagnostic says what its table is.
"$bin" eval -c "$src/configs/quickstart.yaml" "${pset[@]}" --baseline itemknn --set eval.swap_histories=true \
  --set run.dir=runswap --split test >swap.txt 2>&1 \
  && expect "eval: the swapped-history table is labelled" swap.txt "^DIAGNOSTIC \\(eval.swap_histories\\)" \
  || fail "eval swap_histories" swap.txt
ndcg_oracle=$(awk '$1 == "oracle" { print $2 }' eval.txt)
ndcg_pop=$(awk '$1 == "popularity" { print $2 }' eval.txt)
if awk -v o="$ndcg_oracle" -v p="$ndcg_pop" 'BEGIN { exit !(o + 0 > p + 0 && o != "") }'; then
  ok "eval: oracle NDCG@10 $ndcg_oracle > popularity $ndcg_pop"
else
  fail "eval: oracle NDCG@10 '$ndcg_oracle' is not above popularity '$ndcg_pop'" eval.txt
fi
# A file that is not there is named with the absolute path tried.
"$bin" prepare -c "$src/configs/quickstart.yaml" "${pset[@]}" --set data.interactions=no_such.csv >nofile.txt 2>&1
expect "prepare: a missing file names the absolute path tried" nofile.txt \
  "cannot open no_such.csv \\(No such file or directory\\); a relative path is read from the working directory: tried /.*/no_such.csv"
# A bad row stops prepare with file:line; skip counts it instead.
{ cat shop/interactions.csv; echo "u999999,no-such-item,2024-01-01T00:00:00Z,view,,mobile"; } >bad.csv
lines=$(wc -l <bad.csv)
"$bin" prepare -c "$src/configs/quickstart.yaml" "${pset[@]}" --set data.interactions=bad.csv >bad.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "prepare: bad row names file:line" bad.txt "bad.csv:$lines: unknown item id: 'no-such-item'" \
  || fail "prepare bad row: exit $rc" bad.txt
"$bin" prepare -c "$src/configs/quickstart.yaml" "${pset[@]}" --set data.interactions=bad.csv \
  --set data.on_error=skip >skip.txt 2>&1 \
  && expect "prepare: skip counts" skip.txt '1 skipped' '1  unknown item id' "e.g. bad.csv:$lines" \
  || fail "prepare skip" skip.txt

# tokenize: two golden titles give HF's ids (shared/golden); --tokens, --max-len; a bad vocab.
shared=${LLMREC_SHARED_DIR:-$src/../shared}
golden=$shared/golden/wordpiece_bert_base_uncased.jsonl
vocab=$shared/models/bert-base-uncased/vocab.txt
if [[ ! -d $shared ]]; then
  echo "SKIP (no shared reference data): tokenize and encode goldens; $shared is not a folder (set LLMREC_SHARED_DIR)"
elif [[ -f $golden && -f $vocab ]]; then
  sed -n '1p;17p' "$golden" | sed -E 's/^\{"text":"(.*)","ids":.*$/\1/' >tok_in.txt
  sed -n '1p;17p' "$golden" | sed -E 's/^.*"ids":(\[[0-9,]*\]).*$/\1/' >tok_want.txt
  "$bin" tokenize --vocab "$vocab" <tok_in.txt >tok_got.txt 2>&1
  if diff -u tok_want.txt tok_got.txt >tok.diff; then ok "tokenize: golden ids"
  else fail "tokenize: golden ids differ" tok.diff; fi
  printf 'Crème brûlée\n' | "$bin" tokenize --vocab "$vocab" --tokens --max-len 4 >tok_tokens.txt 2>&1
  expect "tokenize --tokens --max-len" tok_tokens.txt '^\["\[CLS\]","cr","##eme","\[SEP\]"\]$'
else
  fail "tokenize: golden files missing under $shared (set LLMREC_SHARED_DIR)"
fi
printf '[PAD]\n[UNK]\n[CLS]\n[SEP]\n[PAD]\n' >dup_vocab.txt
echo x | "$bin" tokenize --vocab dup_vocab.txt >tok_bad.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "tokenize: bad vocab names file:line" tok_bad.txt "dup_vocab.txt:5: duplicate token '\[PAD\]'" \
  || fail "tokenize: bad vocab exit code $rc, expected 1" tok_bad.txt

# encode: the golden case single_no_padding of shared/golden/tiny-bert-forward.json
# through input_ids, in float64; a few values against the golden (to 1e-9).
tiny="${LLMREC_SHARED_DIR:-$src/../shared}/golden/tiny-bert"
if [[ ! -d $shared ]]; then
  :  # skipped loudly above
elif [[ -f $tiny/model.safetensors ]]; then
  echo '{"input_ids": [[101, 13675, 21382, 7987, 9307, 2063, 102]], "attention_mask": [[1, 1, 1, 1, 1, 1, 1]]}' \
    | "$bin" encode --model "$tiny" --dtype float64 >encode.txt 2>&1
  rc=$?
  # last_hidden_state[0,0,0..2], its last value [0,6,63], pooler_output[0,0..1]
  got=$(sed -nE 's/^\{"last_hidden_state": \{"shape": \[1, 7, 64\], "data": \[([^],]+),([^],]+),([^],]+),.*,([^],]+)\]\}, "pooler_output": \{"shape": \[1, 64\], "data": \[([^],]+),([^],]+),.*\]\}\}$/\1 \2 \3 \4 \5 \6/p' encode.txt)
  want="0.03176123908179289 -0.5666363244353502 -1.196252403047884 1.4573157105468726 0.2108725508076231 -0.019713425416350128"
  if [[ $rc -eq 0 ]] && awk -v got="$got" -v want="$want" 'BEGIN {
        n = split(got, g, " "); m = split(want, w, " "); if (n != m) exit 1
        for (i = 1; i <= n; i++) { d = g[i] - w[i]; if (d < 0) d = -d; if (d > 1e-9) exit 1 } }'; then
    ok "encode reproduces the tiny-bert golden"
  else
    fail "encode: exit $rc; got '$got', want '$want'" encode.txt
  fi
  printf '{"input_ids": [101, 102]}\n{"input_ids": [[101, "x"]]}\n' | "$bin" encode --model "$tiny" >encode_bad.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "encode names the bad line and field" encode_bad.txt '^\{"last_hidden_state"' \
    "stdin line 2: field 'input_ids' \[0\]\[1\] is \"x\", not an integer" \
    || fail "encode bad line: exit code $rc, expected 1" encode_bad.txt
else
  fail "encode: golden model missing at $tiny (set LLMREC_SHARED_DIR)"
fi

# train on 2 ranks (a tiny model), then the test-split table with baselines.
cat >tiny.yaml <<YAML
include: $src/configs/quickstart.yaml
data: {dataset: ds.h5}
model:
  dim: 16
  text_len: 16
  bert: {layers: 1, hidden: 32, heads: 2, intermediate: 64, max_positions: 32}
  user: {history: 8}
  loss: {sampled_negatives: 16}
train: {batch_size: 16, epochs: 1, log_every: 5, eval_every: 20, clip_norm: 0}
eval: {baselines: [popularity, itemknn, tfidf], oracle_dir: shop}
YAML
# --dry-run: the checks and the plan, no training; every problem listed, exit 1.
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- train -c tiny.yaml --set run.dir=dry_run --dry-run >dry.txt 2>&1 \
  && expect "train --dry-run on 2 ranks" dry.txt 'every check passed on 2 rank\(s\); nothing trained' \
       '^model: [0-9]+ parameters, [0-9]+ trainable' 'batches of 16 per rank and epoch; [0-9]+ optimizer steps planned' \
       '^all-reduce: [0-9.]+ MiB per step' '^memory per rank \(estimate\)' \
  || fail "train --dry-run" dry.txt
[[ -d dry_run/checkpoints ]] && fail "train --dry-run wrote checkpoints" dry.txt
# A config of data paths alone prepares and passes every training check.
printf 'data: {interactions: shop/interactions.csv, catalogue: shop/catalogue.csv, dataset: only/ds.h5}\nrun: {dir: only}\n' >only.yaml
"$bin" prepare -c only.yaml >only_prep.txt 2>&1 && "$bin" train -c only.yaml --dry-run >only_dry.txt 2>&1 \
  && expect "a config of data paths alone trains (dry run)" only_dry.txt 'every check passed' \
  || fail "a config of data paths alone" only_dry.txt
"$bin" train -c tiny.yaml --set run.dir=dry_run --dry-run --set model.bert.vocab_size=7 >dry_bad.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "train --dry-run lists the problem" dry_bad.txt 'problem\(s\):' \
       'model.bert.vocab_size is 7 but the dataset' || fail "train --dry-run with a bad vocabulary: exit $rc" dry_bad.txt
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- train -c tiny.yaml --set run.dir=run_train >train.txt 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  expect "train -np 2" train.txt 'validation after step [0-9]+: NDCG@10' '^model +0\.[0-9]+' '^popularity +0\.' '^oracle +0\.'
  expect "train metrics.jsonl" run_train/metrics.jsonl '"examples_per_s"' '"comm_share"' '"valid_ndcg@10"' \
    '"grad_norm":[0-9]*\.?[0-9]*[1-9]'  # the real norm with clipping off
  # The run report: one self-contained page (no script, nothing fetched),
  # every chart well-formed SVG with its curve drawn.
  expect "train writes the report" train.txt '^Report: run_train/report.html'
  python3 - run_train/report.html >report_check.txt 2>&1 <<'PY' && ok "report: charts, test table, dataset report, config, offline" \
    || fail "report.html" report_check.txt
import re, sys, xml.etree.ElementTree as ET
h = open(sys.argv[1], encoding="utf-8").read()
assert h.startswith("<!DOCTYPE html>"), "not an HTML page"
svgs = re.findall(r"<svg.*?</svg>", h, re.S)
drawn = 0
for s in svgs:
    root = ET.fromstring(s)  # well-formed
    for pl in root.iter("{http://www.w3.org/2000/svg}polyline"):
        pts = pl.get("points").split()
        assert all(len(p.split(",")) == 2 for p in pts), pl.get("points")
        drawn += len(pts) >= 2
bars = sum(1 for s in svgs for r in ET.fromstring(s).iter("{http://www.w3.org/2000/svg}rect") if float(r.get("height")) > 0)
assert drawn >= 5, "curves drawn: %d" % drawn  # loss, validation, lr, examples/s, comm share, grad norm
assert bars >= 3, "bars drawn: %d" % bars
for needle in ["<h2>Test split</h2>", "<td>model</td>", "<td>oracle</td>", "cold NDCG@10", "<h2>Dataset</h2>",
               "rows_read", "<h2>Protocol</h2>", "dataset_sha256", "<h2>Configuration</h2>", "batch_size",
               "<h2>Segments</h2>", "<td>0 (cold)</td>", "<td>50+</td>"]:
    assert needle in h, "missing " + needle
rest = h.replace('xmlns="http://www.w3.org/2000/svg"', "")
assert "<script" not in rest and "http://" not in rest and "https://" not in rest and " src=" not in rest, "not offline"
print("%d charts, %d curves, %d bars" % (len(svgs), drawn, bars))
PY
  "$bin" report no_such_dir >report_bad.txt 2>&1
  [[ $? -ne 0 ]] && expect "report: a missing run directory is named" report_bad.txt 'no_such_dir' \
    || fail "report of a missing directory succeeded" report_bad.txt
  expect "train eval_test.json" run_train/eval_test.json '"format": "llmrec-eval"' '"dataset_sha256"'
  # The saved model evaluates to the same test NDCG@10 with llmrec eval.
  want=$(awk '$1 == "model" {print $2}' train.txt)
  mpirun "${root[@]}" --oversubscribe -np 2 "$bin" eval -c tiny.yaml --set run.dir=ev_ckpt --split test \
    --checkpoint run_train/model.h5 >ev_ckpt.txt 2>&1
  got=$(awk '$1 == "model" {print $2}' ev_ckpt.txt)
  [[ -n "$want" && "$want" == "$got" ]] && ok "eval --checkpoint reproduces the model's NDCG@10 ($got)" \
    || fail "eval --checkpoint: NDCG@10 '$got', training printed '$want'" ev_ckpt.txt
else
  fail "train -np 2 exited $rc" train.txt
fi
# llmrec adapter: a LoRA model's encoder for HF/PEFT; base + adapter encodes
# exactly as the merged directory, and the adapter is not a no-op.
"$bin" train -c tiny.yaml --set run.dir=lora_run --set model.lora.r=4 --set train.max_steps=3 \
  --set "eval.baselines=[]" --set "eval.fusion.weights={}" --set 'eval.oracle_dir=""' >lora_train.txt 2>&1 \
  && "$bin" adapter -c tiny.yaml --checkpoint lora_run/model.h5 --out lora_hf >adapter.txt 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  expect "adapter writes PEFT, base and merged" adapter.txt 'PEFT LoRA r 4'
  expect "adapter_config.json" lora_hf/adapter/adapter_config.json '"peft_type": "LORA"' '"r": 4' '"query"'
  echo '{"input_ids": [2, 10, 20, 30, 3]}' >ids.jsonl
  "$bin" encode --no-pooler --model lora_hf/merged <ids.jsonl >enc_merged.txt 2>&1
  "$bin" encode --no-pooler --model lora_hf/base --adapter lora_hf/adapter <ids.jsonl >enc_peft.txt 2>&1
  "$bin" encode --no-pooler --model lora_hf/base <ids.jsonl >enc_base.txt 2>&1
  if grep -q '"data"' enc_merged.txt && cmp -s enc_merged.txt enc_peft.txt && ! cmp -s enc_merged.txt enc_base.txt; then
    ok "base + adapter encodes as merged, and differs from base"
  else
    fail "adapter: merged, base + adapter and base do not compare as expected" enc_merged.txt
  fi
  "$bin" adapter -c tiny.yaml --checkpoint run_train/model.h5 --out full_hf >adapter_full.txt 2>&1 \
    && expect "adapter of a fully fine-tuned model: merged only" adapter_full.txt 'no adapter: model.lora.r is 0' \
    || fail "adapter of a fully fine-tuned model" adapter_full.txt
else
  fail "adapter: exit $rc" adapter.txt
fi
# AdaLoRA: ranks 4 pruned to 2 per module on average by the end of the run;
# PEFT's AdaLoRA layout (the kept triplets and their rank_pattern) encodes
# as the merged directory.
"$bin" train -c tiny.yaml --set run.dir=ada_run --set model.lora.r=4 --set model.lora.adaptive.enabled=true \
  --set model.lora.adaptive.target_r=2 --set train.max_steps=6 --set "eval.baselines=[]" \
  --set "eval.fusion.weights={}" --set 'eval.oracle_dir=""' >ada_train.txt 2>&1 \
  && "$bin" adapter -c tiny.yaml --checkpoint ada_run/model.h5 --out ada_hf >ada_adapter.txt 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  expect "AdaLoRA training logs its rank pattern" ada_train.txt 'AdaLoRA after step 6: 4 of 8 rank-1 triplets kept'
  expect "AdaLoRA's budget in metrics.jsonl (8 at the start, 4 by step 5 of 6)" ada_run/metrics.jsonl \
    '"adalora_budget":4'
  expect "adapter writes PEFT AdaLoRA" ada_adapter.txt 'PEFT AdaLoRA init_r 4'
  python3 - ada_hf/adapter/adapter_config.json <<'PY' && ok "AdaLoRA adapter_config.json: target_r x modules kept" \
    || fail "AdaLoRA adapter_config.json" ada_hf/adapter/adapter_config.json
import json, sys
c = json.load(open(sys.argv[1]))
assert c["peft_type"] == "ADALORA" and c["init_r"] == 4 and c["target_r"] == 2 and c["total_step"] == 6, c
kept = sum(sum(flags) for flags in c["rank_pattern"].values())
assert len(c["rank_pattern"]) >= 2 and kept == 2 * len(c["rank_pattern"]), c["rank_pattern"]
PY
  "$bin" encode --no-pooler --model ada_hf/merged <ids.jsonl >enc_ada_merged.txt 2>&1
  "$bin" encode --no-pooler --model ada_hf/base --adapter ada_hf/adapter <ids.jsonl >enc_ada_peft.txt 2>&1
  cmp -s enc_ada_merged.txt enc_ada_peft.txt && grep -q '"data"' enc_ada_peft.txt \
    && ok "AdaLoRA base + adapter encodes as merged" || fail "AdaLoRA: base + adapter differs from merged" enc_ada_peft.txt
else
  fail "AdaLoRA train + adapter: exit $rc" ada_adapter.txt
fi

# User profiles (model.user.profile): synth's users.csv prepared with
# data.users; training on 2 ranks, evaluation and the export read them; a
# model that asks for profiles refuses a dataset without them.
"$bin" prepare -c tiny.yaml "${pset[@]}" --set data.users=shop/users.csv --set data.dataset=ds_prof.h5 \
  --set "data.user_columns.text=[age, region, interests, price]" >prof_prep.txt 2>&1 \
  && expect "prepare reads synth's user table" prof_prep.txt \
    'user table shop/users.csv: ([0-9]+) rows read, \1 kept, 0 skipped' \
    'profiles: 1[0-9][0-9] of 200 users have one \([1-9][0-9]* without\)' \
  || fail "prepare with data.users" prof_prep.txt
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- train -c tiny.yaml --set data.dataset=ds_prof.h5 \
  --set run.dir=prof_run --set model.user.profile=true --set train.max_steps=8 --set "eval.baselines=[]" \
  --set "eval.fusion.weights={}" --set 'eval.oracle_dir=""' >prof_train.txt 2>&1 \
  && mpirun "${root[@]}" --oversubscribe -np 2 "$bin" export -c tiny.yaml --set data.dataset=ds_prof.h5 \
    --set run.dir=prof_run --checkpoint prof_run/model.h5 --output export_prof.h5 >prof_export.txt 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  expect "train with user profiles on 2 ranks" prof_train.txt '^model +0\.[0-9]+'
  n_prof=$(grep -oE 'profiles: [0-9]+' prof_prep.txt | grep -oE '[0-9]+')
  expect "export stores every profile prepare matched" prof_export.txt \
    "user profiles: $n_prof of 200 users have one"
  puser=$(tail -n +2 shop/users.csv | head -1 | cut -d, -f1)
  "$bin" recommend --export export_prof.h5 --user "$puser" --k 5 >prof_rec.json 2>&1 \
    && expect "recommend for a user with a profile" prof_rec.json '"items"' || fail "recommend (profiles)" prof_rec.json
else
  fail "train + export with user profiles: exit $rc" prof_export.txt
fi
"$bin" train -c tiny.yaml --set run.dir=prof_bad --set model.user.profile=true --set train.max_steps=2 \
  >prof_bad.txt 2>&1
rc=$?
[[ $rc -eq 1 ]] && expect "model.user.profile without profiles in the dataset is refused" prof_bad.txt \
  'model.user.profile is on but .*ds.h5 has no user profiles: prepare it with data.users' \
  || fail "model.user.profile on a dataset without profiles: exit $rc" prof_bad.txt

# llmrec pretrain on 2 ranks: an HF directory that encode reads and training
# fine-tunes from with adapters; run.dir's checkpoints are not overwritten
# by a fresh start, and --resume auto continues them.
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- pretrain -c tiny.yaml --set run.dir=pt_run \
  --set pretrain.max_steps=6 --set pretrain.batch_size=8 --set pretrain.log_every=2 >pt.txt 2>&1
rc=$?
if [[ $rc -eq 0 ]]; then
  expect "pretrain -np 2" pt.txt '^Pre-trained encoder: pt_run/pretrained \(HF BertForMaskedLM directory\)' \
    'held-out masked word pieces: loss [0-9.]+, accuracy [0-9.]+'
  expect "pretrain config.json" pt_run/pretrained/config.json '"BertForMaskedLM"'
  expect "pretrain metrics.jsonl" pt_run/pretrain/metrics.jsonl '"texts_per_s"' '"heldout_loss"'
  "$bin" encode --no-pooler --model pt_run/pretrained <ids.jsonl >enc_pt.txt 2>&1 \
    && expect "encode reads the pre-trained directory" enc_pt.txt '"last_hidden_state"' \
    || fail "encode --model pt_run/pretrained" enc_pt.txt
  "$bin" train -c tiny.yaml --set run.dir=ft_run --set model.bert.pretrained=pt_run/pretrained --set model.lora.r=4 \
    --set train.max_steps=3 --set "eval.baselines=[]" --set "eval.fusion.weights={}" --set 'eval.oracle_dir=""' \
    >ft.txt 2>&1 && expect "train fine-tunes the pre-trained encoder with LoRA" ft.txt '^model +0\.[0-9]+' \
    || fail "train from the pre-trained encoder" ft.txt
  "$bin" train -c tiny.yaml --set run.dir=frz_run --set model.bert.pretrained=pt_run/pretrained \
    --set model.bert.freeze=true --set model.lora.r=0 --set train.max_steps=3 --set "eval.baselines=[]" \
    --set "eval.fusion.weights={}" --set 'eval.oracle_dir=""' >frz.txt 2>&1 \
    && expect "train with the pre-trained encoder frozen" frz.txt \
      'model.bert.freeze: the item encoder trains nothing' '^model +0\.[0-9]+' \
    || fail "train with the pre-trained encoder frozen" frz.txt
  # Two stages: adapters fine-tuned from the frozen run's model (train.init_from),
  # the other candidates scored from kept features (train.item_cache_refresh).
  "$bin" train -c tiny.yaml --set run.dir=lpft_run --set model.bert.pretrained=pt_run/pretrained \
    --set model.lora.r=4 --set train.init_from=frz_run/model.h5 --set train.max_steps=3 --set "eval.baselines=[]" \
    --set train.item_cache_refresh=2 --set "eval.fusion.weights={}" --set 'eval.oracle_dir=""' >lpft.txt 2>&1 \
    && expect "train with adapters from the frozen run's model, kept item features" lpft.txt \
      'train.init_from frz_run/model.h5: [0-9]+ tensors loaded; [0-9]+ adapter tensors new' '^model +0\.[0-9]+' \
      'train.item_cache_refresh 2: the batch' \
    && grep -qa 'item_features' lpft_run/checkpoints/step-00000003.h5 \
    && ok "the training checkpoint keeps the item features" \
    || fail "train.init_from the frozen run's model, train.item_cache_refresh 2" lpft.txt
  # It validates the file's model before its first step: the frozen run's best
  # score (new adapters start at zero), the first best of the new run.
  frz_best=$(sed -n 's/.*best validation NDCG@10 \([0-9.]*\) at step.*/\1/p' frz.txt)
  [[ -n $frz_best ]] && grep -q "validation after step 0: NDCG@10 $frz_best (best)" lpft.txt \
    && grep -q '"step":0,"valid_ndcg@10"' lpft_run/metrics.jsonl \
    && ok "train.init_from validates the file's model first ($frz_best, as the frozen run's best)" \
    || fail "train.init_from: no step-0 validation equal to the frozen run's best '$frz_best'" lpft.txt
  "$bin" train -c tiny.yaml --set run.dir=init_bad --set model.bert.pretrained=pt_run/pretrained \
    --set train.init_from=frz_run/model.h5 --set model.dim=8 --set train.max_steps=3 >init_bad.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "train.init_from of another model shape is refused" init_bad.txt \
    "train.init_from frz_run/model.h5: the file's model differs from this one" 'model.dim: checkpoint' \
    || fail "train.init_from with another model.dim: exit $rc" init_bad.txt
  "$bin" train -c tiny.yaml --set run.dir=init_none --set train.init_from=frz_run/none.h5 >init_none.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "train.init_from of a missing file names the key" init_none.txt \
    'train.init_from: frz_run/none.h5: no such file' || fail "train.init_from a missing file: exit $rc" init_none.txt
  "$bin" train -c tiny.yaml --set run.dir=frz_refresh --set model.bert.freeze=true --set model.lora.r=0 \
    --set train.item_cache_refresh=5 >frz_refresh.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "train.item_cache_refresh with a frozen encoder is refused" frz_refresh.txt \
    "train.item_cache_refresh: model.bert.freeze keeps every item's features" \
    || fail "train.item_cache_refresh with model.bert.freeze: exit $rc" frz_refresh.txt
  "$bin" train -c tiny.yaml --set run.dir=full_refresh --set model.lora.r=0 --set train.item_cache_refresh=2 \
    --stop-after 1 >full_refresh.txt 2>&1 \
    && expect "train.item_cache_refresh with every encoder weight trainable warns" full_refresh.txt \
      'warn.*train.item_cache_refresh 2 with every encoder weight trainable' \
    || fail "train.item_cache_refresh with model.lora.r 0" full_refresh.txt
  "$bin" train -c tiny.yaml --set run.dir=frz_bad --set model.bert.freeze=true --set model.lora.r=4 >frz_bad.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "model.bert.freeze with adapters is refused" frz_bad.txt \
    'model.bert.freeze needs the text encoder without adapters' \
    || fail "model.bert.freeze with model.lora.r 4: exit $rc" frz_bad.txt
  "$bin" pretrain -c tiny.yaml --set run.dir=pt_run --set pretrain.max_steps=6 --set pretrain.batch_size=8 >pt_again.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "pretrain refuses to start over a run's checkpoints" pt_again.txt 'already holds 1 checkpoint' \
    || fail "pretrain over existing checkpoints: exit $rc" pt_again.txt
  "$bin" pretrain -c tiny.yaml --set run.dir=pt_run --set pretrain.max_steps=8 --set pretrain.batch_size=8 \
    --resume auto >pt_resume.txt 2>&1 \
    && expect "pretrain --resume auto" pt_resume.txt 'resumed from pt_run/pretrain/checkpoints/step-00000006.h5 after step 6' \
    || fail "pretrain --resume auto" pt_resume.txt
  "$bin" pretrain -c tiny.yaml --set run.dir=pt_bad --set model.bert.layers=0 >pt_bad.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "pretrain refuses a BERT without layers" pt_bad.txt 'set model.bert.layers >= 1' \
    || fail "pretrain with model.bert.layers 0: exit $rc" pt_bad.txt
else
  fail "pretrain -np 2: exit $rc" pt.txt
fi

# SIGTERM (what Slurm sends before the time limit): every rank stops after
# the same step with a message naming it; mpirun (which got the signal
# itself) exits non-zero, a single process with 128 + 15.
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- train -c tiny.yaml --set run.dir=term_run \
  --set train.max_steps=100000 --set train.eval_every=0 >term.txt 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q '"step"' term_run/metrics.jsonl 2>/dev/null && break; sleep 0.2; done
kill -TERM $pid
wait $pid
rc=$?
if [[ $rc -ne 0 ]]; then
  # Each rank's own log file (the ranks' lines may interleave in mpirun's output).
  expect "SIGTERM stops rank 0" term_run/logs/rank-0.log \
    '\[rank 0/2\] warning stop requested \(Terminated\): every rank stopped after step ([0-9]+) of 100000'
  expect "SIGTERM stops rank 1" term_run/logs/rank-1.log \
    '\[rank 1/2\] warning stop requested \(Terminated\): every rank stopped after step ([0-9]+) of 100000'
  expect "SIGTERM is reported" term.txt 'stopped by Terminated after step'
  s0=$(grep -o 'rank 0/2\] warning stop requested (Terminated): every rank stopped after step [0-9]*' term_run/logs/rank-0.log | grep -o '[0-9]*$')
  s1=$(grep -o 'rank 1/2\] warning stop requested (Terminated): every rank stopped after step [0-9]*' term_run/logs/rank-1.log | grep -o '[0-9]*$')
  [[ -n "$s0" && "$s0" == "$s1" ]] && ok "SIGTERM: both ranks at step $s0" || fail "SIGTERM: ranks stopped at '$s0' and '$s1'" term.txt
else
  fail "SIGTERM under mpirun: exit code 0" term.txt
fi
"$bin" train -c tiny.yaml --set run.dir=term1_run --set train.max_steps=100000 --set train.eval_every=0 >term1.txt 2>&1 &
pid=$!
for _ in $(seq 1 100); do grep -q '"step"' term1_run/metrics.jsonl 2>/dev/null && break; sleep 0.2; done
kill -TERM $pid
wait $pid
rc=$?
[[ $rc -eq 143 ]] && expect "SIGTERM, one process: exit 143" term1.txt 'stopped by Terminated after step' \
  || fail "SIGTERM, one process: exit code $rc, expected 143" term1.txt

# The checkpoint SIGTERM wrote lets the run continue (--resume auto); a
# plain second start into that run.dir is refused instead of mixing runs.
s1=$(grep -o 'stop requested (Terminated): every rank stopped after step [0-9]*' term1.txt | grep -o '[0-9]*$')
ls term1_run/checkpoints/step-*.h5 >/dev/null 2>&1 && ok "SIGTERM wrote a checkpoint (step $s1)" \
  || fail "SIGTERM: no checkpoint in term1_run/checkpoints" term1.txt
"$bin" train -c tiny.yaml --set run.dir=term1_run --set train.max_steps=100000 >again.txt 2>&1 \
  && fail "a second start in a run.dir with checkpoints must be refused" again.txt \
  || expect "train refuses to start over a run's checkpoints" again.txt 'already holds 1 checkpoint.*--resume auto'
if [[ -n "$s1" ]]; then
  "$bin" train -c tiny.yaml --set run.dir=term1_run --set train.max_steps=$((s1 + 3)) --set train.eval_every=0 \
    --resume auto >resume1.txt 2>&1 \
    && expect "--resume auto continues after the SIGTERM checkpoint" resume1.txt \
      "resumed from term1_run/checkpoints/step-0*${s1}.h5 after step ${s1}" "trained $((s1 + 3)) of $((s1 + 3)) steps" \
    || fail "--resume auto after SIGTERM" resume1.txt
fi
# Time-sliced training on 2 ranks (--stop-after, then --resume auto) ends
# with exactly the model of the uninterrupted run: the same test NDCG@10.
LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- train -c tiny.yaml --set run.dir=slice_run --stop-after 7 \
  >slice1.txt 2>&1 && LLMREC_BIN=$bin "$src/launch/mpirun.sh" -n 2 -o -- train -c tiny.yaml --set run.dir=slice_run \
  --resume auto >slice2.txt 2>&1
got=$(awk '$1 == "model" {print $2}' slice2.txt)
want=$(awk '$1 == "model" {print $2}' train.txt)
[[ -n "$want" && "$want" == "$got" ]] && grep -q 'resumed from slice_run/checkpoints/step-00000007.h5' slice2.txt \
  && ok "stop after 7 steps + resume on 2 ranks = the uninterrupted run (test NDCG@10 $got)" \
  || fail "sliced training: NDCG@10 '$got', uninterrupted '$want'" slice2.txt

# bench train / allreduce / export / serve print their JSON lines.
mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" bench train --steps 2 --warmup 1 \
  --set run.dir=bench_run >bench_train.txt 2>&1 \
  && expect "bench train -np 2" bench_train.txt '^\{.*"bench":"train".*"examples_per_s":[0-9].*"params_in_sync":true' \
    '"trainable_params":126592.*"total_params":4496000|"total_params":4496000.*"trainable_params":126592' \
  || fail "bench train" bench_train.txt
# bench pretrain: the peer's parameter count (torch_mlm_bench.py: 4,416,698,
# every one trained and all-reduced) and replicas in sync.
mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" bench pretrain --steps 2 --warmup 1 --batch 16 \
  --set run.dir=bench_run >bench_pt.txt 2>&1 \
  && expect "bench pretrain -np 2" bench_pt.txt '^\{.*"bench":"pretrain".*"params_in_sync":true.*"sequences_per_s":[0-9]' \
    '"allreduce_bytes_per_step":17666792' '"trainable_params":4416698' '"workload":"mlm-tiny"' \
  || fail "bench pretrain" bench_pt.txt
mpirun "${root[@]}" --oversubscribe -np 2 -x OMP_NUM_THREADS=1 "$bin" bench allreduce --max-mb 1 \
  --set run.dir=bench_run >bench_ar.txt 2>&1 \
  && expect "bench allreduce -np 2" bench_ar.txt '"bench":"allreduce".*"bytes":1048576' \
  || fail "bench allreduce" bench_ar.txt
# Idle OpenMP threads (common/openmp_policy.h): a single process with two
# threads starts again with OMP_WAIT_POLICY=active; a policy of the user's is
# kept; a rank under mpirun keeps the default (its cores may be shared).
omp_bench=(bench train --steps 1 --warmup 0 --batch 8 --set run.dir=bench_run --set run.threads=2)
env -u OMP_WAIT_POLICY OMP_NUM_THREADS=2 "$bin" "${omp_bench[@]}" >omp_active.txt 2>&1 \
  && expect "one process, 2 threads: OMP_WAIT_POLICY=active" omp_active.txt '"omp_wait_policy":"active"' \
    'wait policy active \(set by llmrec\)' \
  || fail "bench train, 2 threads" omp_active.txt
OMP_WAIT_POLICY=passive OMP_NUM_THREADS=2 "$bin" "${omp_bench[@]}" >omp_passive.txt 2>&1 \
  && expect "one process, 2 threads: the user's OMP_WAIT_POLICY kept" omp_passive.txt \
    '"omp_wait_policy":"passive"' 'wait policy passive \(OMP_WAIT_POLICY\)' \
  || fail "bench train, OMP_WAIT_POLICY=passive" omp_passive.txt
env -u OMP_WAIT_POLICY mpirun "${root[@]}" --oversubscribe -np 1 -x OMP_NUM_THREADS=2 "$bin" "${omp_bench[@]}" \
  >omp_mpi.txt 2>&1 \
  && expect "mpirun, 2 threads: the default wait policy" omp_mpi.txt '"omp_wait_policy":"default"' \
    'wait policy default \(under an MPI launcher' \
  || fail "bench train under mpirun, 2 threads" omp_mpi.txt

# bench tokenize prints one JSON line with the figures.
"$bin" bench tokenize --workload demo --repeats 2 >bench.txt 2>&1 \
  && expect "bench tokenize" bench.txt '^\{"bench":"tokenize".*"texts":2000.*"tokens_per_s":[0-9]' \
  || fail "bench tokenize" bench.txt

# export of the tiny trained model on 2 ranks (docs/export-format.md), a
# catalogue update with one new item, and a bad catalogue row (file:line).
if [[ -f run_train/model.h5 ]]; then
  mpirun "${root[@]}" --oversubscribe -np 2 "$bin" export -c tiny.yaml --set run.dir=export_run \
    --checkpoint run_train/model.h5 --output export.h5 >export.txt 2>&1 \
    && expect "export -np 2" export.txt '^llmrec export: run_train/model.h5 with dataset ds.h5' \
         '^300 items \([0-9]+ cold\), [0-9]+ users \([0-9]+ history events\), [0-9]+ CF neighbours per item' \
         '^encoded 300 items in [0-9.]+ s \([0-9]+ items/s\) and [0-9]+ users on 2 rank\(s\)' '^-> export.h5 \([0-9.]+ KiB\)' \
    || fail "export -np 2" export.txt
  printf 'item_id,title,description,category,brand,price,tags\nnew-001,Trail running shoe,light and fast,Shoes,Zoom,80,running\n' \
    >new_items.csv
  mpirun "${root[@]}" --oversubscribe -np 2 "$bin" export --update export.h5 --catalogue new_items.csv \
    --checkpoint run_train/model.h5 --output export2.h5 --set run.dir=export_run >update.txt 2>&1 \
    && expect "export --update" update.txt 'new_items.csv: 1 item\(s\): 1 new, 0 changed, 0 unchanged' \
         '^catalogue update 1 of the export' '^301 items \([0-9]+ cold\)' '^encoded 1 items in' '^-> export2.h5 \(' \
    || fail "export --update" update.txt
  cold1=$(sed -nE 's/^300 items \(([0-9]+) cold.*/\1/p' export.txt)
  cold2=$(sed -nE 's/^301 items \(([0-9]+) cold.*/\1/p' update.txt)
  [[ -n "$cold1" && "$cold2" == "$((cold1 + 1))" ]] && ok "export --update: the new item is cold ($cold1 -> $cold2)" \
    || fail "export --update: cold items '$cold1' -> '$cold2'" update.txt
  printf 'item_id,title,description,category,brand,price,tags\nnew-002,,,,,1,\n' >bad_items.csv
  "$bin" export --update export2.h5 --catalogue bad_items.csv --checkpoint run_train/model.h5 \
    --set run.dir=export_run >update_bad.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "export --update: bad row names file:line" update_bad.txt \
    "bad_items.csv:2: missing item text: item 'new-002'" || fail "export --update bad row: exit $rc" update_bad.txt
else
  fail "export: no run_train/model.h5 to export"
fi

# recommend and serve from the export (docs/serving.md). A cold item added
# by a catalogue update: a copy of a cold item's catalogue row under a new
# id has its text, so its text vector (cold items have no ID vector) and
# `similar` of the original gives the copy first (cosine 1). Then
# `llmrec serve --port 0` on the updated export: good and bad requests,
# /metrics, a short wrk load with malformed requests mixed in, SIGTERM.
if [[ -f export.h5 ]]; then
  user=$(tail -n +2 shop/interactions.csv | cut -d, -f1 | sort | uniq -c | awk '$1 >= 3 { print $2; exit }')
  # export --pseudonymise: no raw user id in the file; through the key a raw
  # id gets the plain export's recommendations; without it the user is
  # unknown; another key is refused.
  head -c 32 /dev/urandom | base64 >users.key
  chmod 600 users.key
  mpirun "${root[@]}" --oversubscribe -np 2 "$bin" export -c tiny.yaml --set run.dir=export_run \
    --checkpoint run_train/model.h5 --output export_p.h5 --pseudonymise users.key >export_p.txt 2>&1
  rc=$?
  if [[ $rc -eq 0 ]]; then
    expect "export --pseudonymise" export_p.txt 'user ids pseudonymised with the key of users.key'
    if grep -qa -- "$user" export.h5 && ! grep -qa -- "$user" export_p.h5; then
      ok "export --pseudonymise: user id $user is in the plain export, not in the pseudonymised one"
    else
      fail "export --pseudonymise: raw user id $user still in export_p.h5 (or not in export.h5)"
    fi
    "$bin" recommend --export export.h5 --user "$user" --k 5 >rec_plain.json 2>&1
    "$bin" recommend --export export_p.h5 --pseudonym-key-file users.key --user "$user" --k 5 >rec_p.json 2>&1
    "$bin" recommend --export export_p.h5 --user "$user" --k 5 >rec_nokey.json 2>&1
    python3 -c '
import json, sys
plain, keyed, nokey = (json.load(open(f)) for f in sys.argv[1:4])
assert [i["id"] for i in keyed["items"]] == [i["id"] for i in plain["items"]], (keyed, plain)
assert keyed.get("fallback") is None and keyed["user"].startswith("p:"), keyed
assert nokey.get("fallback") == "popularity", nokey' rec_plain.json rec_p.json rec_nokey.json >pseudo_check.txt 2>&1 \
      && ok "recommend --pseudonym-key-file: the plain export's top 5; without the key an unknown user" \
      || fail "recommend on the pseudonymised export" pseudo_check.txt
    head -c 32 /dev/urandom | base64 >other.key
    "$bin" recommend --export export_p.h5 --pseudonym-key-file other.key --user "$user" >rec_other.txt 2>&1
    rc=$?
    [[ $rc -eq 1 ]] && expect "recommend: another pseudonym key is refused" rec_other.txt 'not the one the export was written with' \
      || fail "recommend with another key: exit $rc" rec_other.txt
  else
    fail "export --pseudonymise: exit $rc" export_p.txt
  fi
  "$bin" recommend --export export.h5 --user "$user" --k 5 >rec.json 2>rec_err.txt
  rc=$?
  if [[ $rc -eq 0 ]] && python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
ids = [i["id"] for i in d["items"]]
assert d["user"] == sys.argv[2] and d["k"] == 5 and len(ids) == 5 and len(set(ids)) == 5, d
assert [i["rank"] for i in d["items"]] == [1, 2, 3, 4, 5], d
assert all(isinstance(i["score"], float) for i in d["items"]), d
print("\n".join(ids))' rec.json "$user" >rec_ids.txt 2>rec_py.txt; then
    ok "recommend --user $user --k 5: JSON with 5 items"
  else
    cat rec_err.txt rec_py.txt >>rec.json
    fail "recommend --user $user --k 5: exit $rc or invalid JSON" rec.json
  fi
  "$bin" recommend --export export.h5 --user "$user" --k 5 --table >rec_table.txt 2>&1
  expect "recommend --table" rec_table.txt "^user $user \([0-9]+ events\): k 5, exclude seen" \
    '^rank +id +score +category +cold +text$' '^ +5  [^ ]+ +-?[0-9]+\.[0-9]{4}  '
  "$bin" recommend --export export.h5 --user "$user" --k 5 --table --explain --tfidf-weight 1 >rec_explain.txt 2>&1
  expect "recommend --explain: the content component and matching keywords" rec_explain.txt \
    'tfidf_weight 1, ' '^ +because: .*; matches: [^ ]'
  awk '$1 ~ /^[0-9]+$/ { print $2 }' rec_table.txt >rec_table_ids.txt
  cmp -s rec_ids.txt rec_table_ids.txt && ok "recommend: --table lists the items of the JSON" \
    || fail "recommend: --table ids differ from the JSON's" rec_table.txt

  # The catalogue update with the copy of a cold item.
  "$bin" recommend --export export.h5 --user "$user" --k 1000 --exclude none >all.json 2>&1
  cold_id=$(python3 -c 'import json, sys; print(next(i["id"] for i in json.load(open(sys.argv[1]))["items"] if i["cold"]))' \
    all.json 2>/dev/null)
  { head -1 shop/catalogue.csv; grep "^$cold_id," shop/catalogue.csv | sed "s/^$cold_id,/copy-of-cold,/"; } >copy_items.csv
  "$bin" recommend --export export.h5 --history copy-of-cold >unknown_item.txt 2>&1
  rc=$?
  [[ -n "$cold_id" && $rc -eq 1 ]] && expect "recommend: an id not yet in the export is unknown" unknown_item.txt \
    "field 'history': unknown item ids 'copy-of-cold'" || fail "recommend unknown item: exit $rc (cold item '$cold_id')" unknown_item.txt
  "$bin" export --update export.h5 --catalogue copy_items.csv --checkpoint run_train/model.h5 --output export_cold.h5 \
    --set run.dir=export_run >update_cold.txt 2>&1 \
    && expect "export --update: a copy of cold item $cold_id" update_cold.txt 'copy_items.csv: 1 item\(s\): 1 new' \
         '^301 items' || fail "export --update with the copy of a cold item" update_cold.txt

  # serve --port 0 logs the port it got.
  : >serve.txt
  "$bin" serve --export export_cold.h5 --port 0 --threads 2 >>serve.txt 2>&1 &
  spid=$!
  port=""
  for _ in $(seq 1 100); do
    port=$(sed -nE 's/.*listening on http:\/\/127\.0\.0\.1:([0-9]+) .*/\1/p' serve.txt)
    [[ -n $port ]] && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    fail "serve: no 'listening on' line" serve.txt
    kill -TERM $spid 2>/dev/null; wait $spid 2>/dev/null
  elif ! command -v curl >/dev/null; then
    fail "serve: curl is missing (make deps installs it)"
    kill -TERM $spid; wait $spid
  else
    url=http://127.0.0.1:$port
    # http NAME STATUS PATTERN CURL-ARGS...: the answer has STATUS and a body matching PATTERN.
    http() {
      local name=$1 want=$2 pat=$3; shift 3
      local got
      got=$(curl -s -o http_body.txt -D http_headers.txt -w '%{http_code}' --max-time 10 "$@")
      if [[ $got == "$want" ]]; then expect "$name" http_body.txt "$pat"
      else echo "(HTTP $got)" >>http_body.txt; fail "$name: HTTP $got, expected $want" http_body.txt; fi
    }
    http "serve: GET /health" 200 '"status":"ok"' "$url/health"
    expect "serve: /health describes the updated export" http_body.txt '"items":301' '"users":200' '"catalogue_updates":1'
    http "serve: POST /recommend" 200 "\"user\":\"$user\"" -H 'Content-Type: application/json' \
      -d "{\"user\": \"$user\", \"k\": 5}" "$url/recommend"
    cp http_body.txt serve_rec.json
    "$bin" recommend --export export_cold.h5 --user "$user" --k 5 >rec_cold.json 2>&1
    python3 -c '
import json, sys
a, b = (json.load(open(f))["items"] for f in sys.argv[1:3])
assert [(i["id"], i["score"]) for i in a] == [(i["id"], i["score"]) for i in b] and len(a) == 5' \
      serve_rec.json rec_cold.json 2>serve_cmp.txt \
      && ok "serve: POST /recommend = llmrec recommend on the same export" \
      || fail "serve: POST /recommend differs from llmrec recommend" serve_cmp.txt
    http "serve: similar of the cold item gives its copy first" 200 '"items":\[\{[^}]*"id":"copy-of-cold","rank":1,' \
      "$url/similar?item=$cold_id&k=3"
    http "serve: similar of the new item gives the original first" 200 "\"items\":\\[\\{[^}]*\"id\":\"$cold_id\",\"rank\":1," \
      -d '{"item": "copy-of-cold", "k": 3}' "$url/similar"
    http "serve: invalid JSON is 400" 400 '"error":"the request body is not valid JSON' -d '{"user": ' "$url/recommend"
    http "serve: an unknown field is 400" 400 "\"error\":\"field 'kk': unknown field" \
      -d "{\"user\": \"$user\", \"kk\": 5}" "$url/recommend"
    http "serve: an unknown user gets the popular items, flagged" 200 '"fallback":"popularity"' \
      -d '{"user": "no-such-user"}' "$url/recommend"
    http "serve: POST /health is 405" 405 '"error":"method POST is not allowed on /health' -X POST "$url/health"
    expect "serve: 405 names the allowed methods" http_headers.txt '^Allow: GET'
    http "serve: DELETE /recommend is 405" 405 '"error":"method DELETE is not allowed on /recommend' \
      -X DELETE "$url/recommend"
    head -c $((2 * 1024 * 1024)) /dev/zero | tr '\0' ' ' >big_body.txt
    http "serve: a 2 MiB body is 413" 413 '"error":"request body too large' --data-binary @big_body.txt "$url/recommend"
    # 20 requests on keep-alive connections: about a millisecond each
    # (without TCP_NODELAY most waited ~40 ms for a delayed ACK: ~0.5 s).
    kargs=()
    for _ in $(seq 1 20); do kargs+=(-o /dev/null "$url/recommend?user=$user&k=5"); done
    took=$(curl -s -w '%{time_total}\n' "${kargs[@]}" | awk '{ s += $1 } END { print s }')
    awk -v t="$took" 'BEGIN { exit !(t < 0.25) }' && ok "serve: 20 keep-alive requests in ${took} s" \
      || fail "serve: 20 keep-alive requests took ${took} s (> 0.25 s: Nagle's delay?)"
    http "serve: GET /metrics" 200 '"latency_ms"' "$url/metrics"
    python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))
r = m["requests"]
assert r["/recommend"] == {"200": 22, "400": 2, "405": 1, "413": 1}, r
assert r["/similar"] == {"200": 2} and r["/health"] == {"200": 1, "405": 1}, r
assert m["errors"] == {"total": 5, "client": 5, "server": 0}, m["errors"]
assert m["requests_total"] == 30, m
l = m["latency_ms"]
assert l["window"] == 30 and 0 < l["p50"] <= l["p99"] <= l["max"], l
print("p50 %.3f ms, p99 %.3f ms" % (l["p50"], l["p99"]))' http_body.txt >metrics_check.txt 2>&1 \
      && ok "serve: /metrics counts every status; $(cat metrics_check.txt)" \
      || fail "serve: /metrics" metrics_check.txt
    # A 2 s wrk run (bench/serve_load.sh's script): valid requests from 2
    # connections with 20 % malformed ones; every status as expected.
    if command -v wrk >/dev/null; then
      tail -n +2 shop/interactions.csv | cut -d, -f1 | sort | uniq -c | awk '$1 >= 3 { print $2 }' >users.txt
      wrk -t 2 -c 2 -d 2s -s "$src/bench/serve_load.lua" "$url" -- users.txt 0.2 >wrk.txt 2>&1
      expect "serve: 2 s under wrk, malformed requests mixed in" wrk.txt '^kind valid +[1-9][0-9]{2,} requests' \
        '^kind bad_json +[1-9][0-9]* requests' '^kind unknown_item +[1-9][0-9]* requests' '^unexpected: 0$'
    else
      fail "serve: wrk is missing (make deps installs it)"
    fi
    # SIGTERM: exit 0 within a few seconds, with the log line.
    kill -TERM $spid
    for _ in $(seq 1 50); do kill -0 $spid 2>/dev/null || break; sleep 0.1; done
    if kill -0 $spid 2>/dev/null; then
      fail "serve: still running 5 s after SIGTERM" serve.txt
      kill -KILL $spid
    fi
    wait $spid
    rc=$?
    [[ $rc -eq 0 ]] && expect "serve: SIGTERM stops it with exit 0" serve.txt 'signal 15: stopped' \
      || fail "serve: exit code $rc after SIGTERM, expected 0" serve.txt
  fi
  # serve --events-log: 20 acknowledged events, then kill -9: all 20 are in
  # the log, and `llmrec prepare` reads the log back as interactions.
  : >serve_ev.txt
  "$bin" serve --export export.h5 --port 0 --threads 2 --events-log events.jsonl >>serve_ev.txt 2>&1 &
  spid=$!
  port=""
  for _ in $(seq 1 100); do
    port=$(sed -nE 's/.*listening on http:\/\/127\.0\.0\.1:([0-9]+) .*/\1/p' serve_ev.txt)
    [[ -n $port ]] && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.1
  done
  if [[ -n $port ]]; then
    items=$(tail -n +2 shop/catalogue.csv | cut -d, -f1 | head -20)
    acked=0
    for it in $items; do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -d "{\"user\": \"$user\", \"item\": \"$it\", \"type\": \"view\"}" \
        "http://127.0.0.1:$port/events")
      [[ $code == 200 ]] && acked=$((acked + 1))
    done
    kill -KILL $spid; wait $spid 2>/dev/null
    lines=$(python3 -c 'import json,sys; print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["user"] == sys.argv[2]))' events.jsonl "$user" 2>&1)
    [[ $acked -eq 20 && $lines == 20 ]] && ok "serve --events-log: 20 events acknowledged, all 20 in the log after kill -9" \
      || fail "serve --events-log: $acked acknowledged, '$lines' in the log" serve_ev.txt
    "$bin" prepare -c tiny.yaml --set data.interactions=events.jsonl --set data.catalogue=shop/catalogue.csv --set data.dataset=events_ds.h5 \
      --set "data.columns={user: user, item: item, time: time, event: type, rating: ''}" \
      --set run.dir=events_prep >events_prep.txt 2>&1 \
      && expect "prepare reads the events log back" events_prep.txt '^dataset: 1 users, [0-9]+ items .*, 20 events' \
      || fail "prepare on the events log" events_prep.txt
  else
    fail "serve --events-log: no 'listening on' line" serve_ev.txt
    kill -TERM $spid 2>/dev/null; wait $spid 2>/dev/null
  fi
  # serve --arm: two exports as A/B arms; every answer names its arm, and
  # /metrics counts each arm's answers.
  "$bin" serve --export export.h5 --arm a=export.h5 --port 0 >ab_bad.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "serve: --export and --arm together are refused" ab_bad.txt 'give --export FILE, or two or more --arm' \
    || fail "serve --export with --arm: exit $rc" ab_bad.txt
  : >serve_ab.txt
  "$bin" serve --arm control=export.h5 --arm candidate=export_cold.h5:1 --port 0 --threads 2 \
    --events-log ab_events.jsonl >>serve_ab.txt 2>&1 &
  spid=$!
  port=""
  for _ in $(seq 1 100); do
    port=$(sed -nE 's/.*listening on http:\/\/127\.0\.0\.1:([0-9]+) .*/\1/p' serve_ab.txt)
    [[ -n $port ]] && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.1
  done
  if [[ -n $port ]]; then
    users=$(tail -n +2 shop/interactions.csv | cut -d, -f1 | sort -u | head -20)
    for u in $users; do curl -s --max-time 10 "http://127.0.0.1:$port/recommend?user=$u&k=3"; echo; done >ab_answers.txt
    curl -s --max-time 10 "http://127.0.0.1:$port/metrics" >ab_metrics.json
    # Under load, with clicks: 2 s of wrk, the first item of 30 % of the
    # answers clicked (POST /events); each arm counts its clicks.
    if command -v wrk >/dev/null; then
      tail -n +2 shop/interactions.csv | cut -d, -f1 | sort | uniq -c | awk '$1 >= 3 { print $2 }' >ab_users.txt
      wrk -t 2 -c 2 -d 2s -s "$src/bench/serve_load.lua" "http://127.0.0.1:$port" -- ab_users.txt 0 0.3 >ab_wrk.txt 2>&1
      curl -s --max-time 10 "http://127.0.0.1:$port/metrics" >ab_metrics_load.json
      python3 -c '
import json, sys
m = json.load(open(sys.argv[1]))["arms"]
for name, a in m.items():
    assert a["clicks"] > 0 and abs(a["click_through"] - a["clicks"] / a["recommendations"]) < 1e-9, (name, a)
print(", ".join("%s %d clicks of %d answers" % (n, a["clicks"], a["recommendations"]) for n, a in m.items()))' \
        ab_metrics_load.json >ab_load_check.txt 2>&1 \
        && expect "serve --arm under wrk with clicks: $(cat ab_load_check.txt)" ab_wrk.txt \
          '^kind click +[1-9][0-9]* requests, +[1-9][0-9]* with the expected 200' '^unexpected: 0$' \
        || fail "serve --arm under wrk with clicks" ab_load_check.txt
    else
      fail "serve --arm: wrk is missing (make deps installs it)"
    fi
    kill -TERM $spid; wait $spid
    python3 -c '
import json, sys
arms = [json.loads(l)["arm"] for l in open(sys.argv[1]) if l.strip()]
m = json.load(open(sys.argv[2]))["arms"]
assert len(arms) == 20 and set(arms) == {"control", "candidate"}, arms
assert m["control"]["recommendations"] == arms.count("control") and m["candidate"]["recommendations"] == arms.count("candidate"), m
print("control %d, candidate %d" % (arms.count("control"), arms.count("candidate")))' ab_answers.txt ab_metrics.json >ab_check.txt 2>&1 \
      && ok "serve --arm: 20 users split between two arms, each answer names its arm ($(cat ab_check.txt))" \
      || fail "serve --arm" ab_check.txt
  else
    fail "serve --arm: no 'listening on' line" serve_ab.txt
    kill -TERM $spid 2>/dev/null; wait $spid 2>/dev/null
  fi
  # serve --token-file / --access-log: 401 without the token, 200 with it,
  # one access-log line per request without the user id; an empty token
  # file is refused by name.
  : >empty.token
  "$bin" serve --export export.h5 --port 0 --token-file empty.token >tok_bad.txt 2>&1
  rc=$?
  [[ $rc -eq 1 ]] && expect "serve: an empty token file is refused" tok_bad.txt '--token-file empty.token: the first line holds 0 bytes, at least 1 are needed' \
    || fail "serve with an empty token file: exit $rc" tok_bad.txt
  printf 'tok-%s\n' "$$" >serve.token
  chmod 600 serve.token
  : >serve_tok.txt
  cp export.h5 live.h5
  "$bin" serve --export live.h5 --port 0 --threads 2 --token-file serve.token --access-log access.log >>serve_tok.txt 2>&1 &
  spid=$!
  port=""
  for _ in $(seq 1 100); do
    port=$(sed -nE 's/.*listening on http:\/\/127\.0\.0\.1:([0-9]+) .*/\1/p' serve_tok.txt)
    [[ -n $port ]] && break
    kill -0 $spid 2>/dev/null || break
    sleep 0.1
  done
  if [[ -n $port ]] && command -v curl >/dev/null; then
    url=http://127.0.0.1:$port
    http "serve --token-file: no token, 401" 401 'bearer token' "$url/recommend?user=$user&k=3"
    http "serve --token-file: /health open" 200 '"status":"ok"' "$url/health"
    http "serve --token-file: with the token, 200" 200 '"items"' -H "Authorization: Bearer tok-$$" "$url/recommend?user=$user&k=3"
    http "serve: Prometheus text for a scraper" 200 '^llmrec_requests_total\{endpoint="/recommend",status="401"\} 1$' \
      -H "Authorization: Bearer tok-$$" -H 'Accept: text/plain;version=0.0.4' "$url/metrics"
    # SIGHUP after a deploy (copy beside, rename over): the new export serves.
    cp export_cold.h5 live.h5.new && mv live.h5.new live.h5
    kill -HUP $spid
    for _ in $(seq 1 50); do grep -q 'SIGHUP: reloaded' serve_tok.txt && break; sleep 0.1; done
    http "serve: SIGHUP swaps in the new export" 200 '"items":301' -H "Authorization: Bearer tok-$$" "$url/health"
    kill -TERM $spid; wait $spid
    if [[ $(wc -l <access.log) -eq 5 ]] && ! grep -q -e "$user" -e "tok-$$" -e '?' access.log; then
      expect "serve --access-log: a line per request, no ids" access.log '^[0-9T:.-]+Z GET /recommend 401 [0-9.]+ ms -$' \
        '^[0-9T:.-]+Z GET /health 200 [0-9.]+ ms -$' \
        '^[0-9T:.-]+Z GET /recommend 200 [0-9.]+ ms default$'
    else
      fail "serve --access-log: 5 lines without ids expected" access.log
    fi
  else
    fail "serve --token-file: no 'listening on' line" serve_tok.txt
    kill -TERM $spid 2>/dev/null; wait $spid 2>/dev/null
  fi
else
  fail "recommend/serve: no export.h5"
fi

# bench serve: latency over the export made above.
"$bin" bench serve --export export.h5 --requests 50 --set run.dir=bench_run >bench_serve.txt 2>&1 \
  && expect "bench serve" bench_serve.txt '"bench":"serve".*"p99_ms":[0-9]' || fail "bench serve" bench_serve.txt

# Time and context features (docs/ranker.md): the shop's device column
# prepared as context, learned with the events' times by a causal tower,
# exported and asked for with a request time and device; a column the
# dataset lacks is a config error naming the key, one the model lacks a 400.
cset=(--set data.columns.context=[device] --set data.dataset=ctx_ds.h5 --set run.dir=ctx_run
      --set model.user.pooling=causal --set model.user.layers=1 --set "model.user.time_features=[gap,weekday]"
      --set "model.user.context_columns=[device]" --set train.max_steps=12 --set eval.fusion.tune=false)
"$bin" prepare -c tiny.yaml "${pset[@]}" "${cset[@]}" >ctx_prep.txt 2>&1 || fail "prepare with a context column" ctx_prep.txt
if "$bin" train -c tiny.yaml "${cset[@]}" >ctx_train.txt 2>&1 \
   && "$bin" export -c ctx_run/config.yaml --checkpoint ctx_run/model.h5 >ctx_export.txt 2>&1; then
  ctx_user=$(sed -n 2p shop/interactions.csv | cut -d, -f1)
  for d in mobile desktop; do
    "$bin" recommend --export ctx_run/export.h5 --user "$ctx_user" --k 20 --time 1716000000 --context device=$d \
      --cf-weight 0 --popularity-weight 0 --tfidf-weight 0 >ctx_rec_$d.txt 2>&1
  done
  if grep -q '"items"' ctx_rec_mobile.txt && ! cmp -s ctx_rec_mobile.txt ctx_rec_desktop.txt; then
    ok "time and context features: trained, exported, and the request's device changes the scores"
  else
    fail "recommend --context device=mobile vs desktop: same scores or no items" ctx_rec_mobile.txt
  fi
  "$bin" recommend --export ctx_run/export.h5 --user "$ctx_user" --context country=de >ctx_bad.txt 2>&1
  [[ $? -eq 1 ]] && expect "recommend --context: a column the model lacks names the field" ctx_bad.txt \
    "field 'context': 'country' is not a context column of this model \(its columns: 'device'\)" \
    || fail "recommend --context country=de: exit code 1 expected" ctx_bad.txt
else
  fail "train/export with time and context features" ctx_train.txt
fi
"$bin" train -c tiny.yaml "${cset[@]}" --set run.dir=ctx_bad_run --set "model.user.context_columns=[country]" \
  >ctx_cfg.txt 2>&1
[[ $? -eq 1 ]] && expect "train: a context column the dataset lacks names the key" ctx_cfg.txt \
  "model.user.context_columns: .*no context column 'country'" || fail "train with context_columns [country]" ctx_cfg.txt

echo "cli: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
