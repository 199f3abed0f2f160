#!/usr/bin/env python3
"""Writes the seed corpora of fuzz/corpus/<target>/ (small valid and edge-case
inputs; byte 0 of most targets picks a mode, see each fuzz/fuzz_<target>.cpp).
The files are committed; rerun after changing a seed here:

    python3 fuzz/make_seeds.py

Inputs that once crashed a target are kept next to them as regress-* files
(and as GTest regression tests, docs/reliability.md); this script leaves
those alone.
"""
import json
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def safetensors(header, data=b"", pad=True):
    text = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def seeds_safetensors():
    f32 = struct.pack("<4f", 1.0, -2.5, 0.0, 3.25)
    write("safetensors", "f32_2x2", safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}, f32))
    write("safetensors", "mixed_with_metadata", safetensors(
        {"__metadata__": {"format": "pt", "note": "crème"},
         "a.half": {"dtype": "F16", "shape": [3], "data_offsets": [0, 6]},
         "b.ids": {"dtype": "I64", "shape": [1], "data_offsets": [6, 14]},
         "c.mask": {"dtype": "BOOL", "shape": [2], "data_offsets": [14, 16]},
         "d.bf16": {"dtype": "BF16", "shape": [1, 1], "data_offsets": [16, 18]}},
        b"\x00\x3c\x00\x40\x00\x42" + struct.pack("<q", -7) + b"\x01\x00" + b"\x80\x3f"))
    write("safetensors", "empty_tensor", safetensors({"e": {"dtype": "I8", "shape": [0, 4], "data_offsets": [0, 0]}}))
    write("safetensors", "scalar_u8", safetensors({"s": {"dtype": "U8", "shape": [], "data_offsets": [0, 1]}}, b"\x07"))
    write("safetensors", "only_metadata", safetensors({"__metadata__": {"format": "pt"}}, pad=False))
    write("safetensors", "truncated", safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}},
                                                 f32)[:-4])
    write("safetensors", "overlap", safetensors(
        {"x": {"dtype": "I32", "shape": [2], "data_offsets": [0, 8]},
         "y": {"dtype": "I32", "shape": [1], "data_offsets": [4, 8]}}, b"\x00" * 8))
    write("safetensors", "f64_i16_i32", safetensors(
        {"d": {"dtype": "F64", "shape": [1], "data_offsets": [0, 8]},
         "h": {"dtype": "I16", "shape": [2], "data_offsets": [8, 12]},
         "i": {"dtype": "I32", "shape": [1, 1, 1], "data_offsets": [12, 16]}}, b"\x00" * 16))
    write("safetensors", "huge_length", struct.pack("<Q", 2**63) + b"{}")


def seeds_rows():
    cat_csv = ("item_id,title,category,brand,tags,description\n"
               "a,Red Running Shoes,sports > shoes,Acme,red;light,\"Light, fast shoes\"\n"
               "b,Blue Jacket,clothing,Bolt,blue,\"A warm jacket\nwith two lines\"\n"
               "c,Crème brûlée,food,,,\"say \"\"yum\"\"\"\n"
               "d,,,,,\n")
    write("rows", "catalogue_csv", "\x00" + cat_csv)
    write("rows", "catalogue_csv_bom_crlf", "\x00\ufeff" + cat_csv.replace("\n", "\r\n"))
    write("rows", "catalogue_tsv", "\x01item_id\ttitle\tcategory\n1\tTea\tgrocery\n2\t\u7ea2\u8336\tgrocery\n\n3\tbad\n")
    write("rows", "catalogue_jsonl", "\x02" + "\n".join([
        json.dumps({"item_id": "a", "title": "Red shoes", "category": "sports"}),
        json.dumps({"item_id": 7, "title": "Seven", "tags": 1.5, "brand": True}),
        "",
        json.dumps({"item_id": "x", "title": None, "description": "only a description"}),
        "[1, 2]",
        json.dumps({"item_id": "y", "title": {"nested": 1}}),
    ]) + "\n")
    write("rows", "catalogue_csv_errors", "\x03" + cat_csv + "e,text \"quoted\" inside,x,,,\n")
    write("rows", "catalogue_dup_ids", "\x00item_id,title\na,one\na,two\n,three\nb,\"unterminated\n")
    header = "user_id,item_id,timestamp,event,rating,device\n"
    rows = ("u1,i1,100,view,,mobile\nu1,i2,200,click,4.5,desktop\nu1,i3,300,purchase,5,mobile\n"
            "u2,i3,1970-01-01T00:01:40Z,view,,tv\nu2,i1,1970-01-01 00:03:20+01:00,cart,,tv\n"
            "u2,i4,1970-01-01T00:05:00.25Z,view,3,tv\nu3,i9,100,view,,x\nu3,i1,abc,view,,x\n"
            "u3,i1,100,zoom,,x\nu1,i1,100,view,,mobile\n")
    write("rows", "interactions_csv", "\x06\x00" + header + rows)
    write("rows", "interactions_csv_temporal", "\x06\x3c" + header + rows)
    write("rows", "interactions_csv_unix_ms", "\x06\x49" + header + rows.replace(",100,", ",100000,"))
    write("rows", "interactions_jsonl", "\x07\x10" + "\n".join(json.dumps(r) for r in [
        {"user_id": "u1", "item_id": "i1", "timestamp": 100, "event": "view"},
        {"user_id": "u1", "item_id": "i2", "timestamp": 150.5, "event": "click", "rating": 4},
        {"user_id": "u1", "item_id": "i5", "timestamp": "1970-01-01T00:05:00Z", "event": "purchase"},
        {"user_id": 2, "item_id": "i3", "timestamp": 1, "event": "view", "rating": "x"},
    ]) + "\n")


def seeds_config():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(here, "configs", "quickstart.yaml"), "rb") as f:
        write("config", "quickstart", f.read())
    write("config", "small_with_sets", "run: {dir: runs/x, threads: 2}\nmodel:\n  dim: 32\n  user: {heads: 2}\n"
          "\0train.lr=0.01\0model.lora.targets=[query, key]\0eval.k=[5]")
    write("config", "anchors", "base: &b {dir: a}\nrun: *b\n")
    write("config", "errors", "run:\n  dir: [1, 2]\n  thread: 3\ncomm: {timeout_s: -1, backend: nccl}\n"
          "model: {dim: 30, user: {heads: 4}, bert: {hidden: 10, heads: 3}, text_len: 999}\n")
    write("config", "duplicate_keys", "log: {level: info}\nlog: {level: debug}\n")
    write("config", "types", "data:\n  event_weights: {view: 1e3, buy: .5}\n  min_user_events: 0x10\n"
          "  kcore: 99999999999999999999\ntrain: {epochs: 1, lr: nan}\n")
    write("config", "empty", "")
    write("config", "scalar_root", "just a string\n")


def seeds_wordpiece():
    write("wordpiece", "accents", "\x01Crème brûlée for the running shoes! [MASK]")
    write("wordpiece", "cased", "\x02Crème Brûlée SHOES ǅ ß ⅷ")
    write("wordpiece", "cjk_punct", "\x01\u7ea2\u8336 tea\u3002\u201cquoted\u201d \u0663\u0664 -- a/b")
    write("wordpiece", "controls_invalid", b"\x05ab\x00c\x7f d\xe9t\xc3(x\xf0\x9f\x98 e\xcc\x81\xcc\xa7 \xef\xbf\xbd z")
    write("wordpiece", "truncate", "\x19the shoe the shoe the shoe runs running")
    write("wordpiece", "long_word", "\x01" + "a" * 120 + " bb")
    write("wordpiece", "one_char_words", "\x41ab c")
    write("wordpiece", "combining", "\x05a\u0301\u0327\u0328 e\u0952\u0951 \u0915\u093c\u094d")
    write("wordpiece", "own_vocab", b"\x21[PAD]\n[UNK]\n[CLS]\n[SEP]\nrun\n##ning\n##s \r\n\x00running runs fast")
    write("wordpiece", "own_vocab_bad", b"\x21[PAD]\n[UNK]\n[UNK]\n\n[CLS]\x00x")


def seeds_request():
    write("request", "recommend_full", "\x00" + json.dumps(
        {"user": "u12", "k": 7, "category": ["A", "B"], "exclude": "purchased", "hour": 20, "hour_weight": 0.5,
         "cf_weight": 0.5, "diversity": 0.3, "explain": True}))
    write("request", "recommend_history", "\x00{\"history\": [\"i1\", \"i2\"], \"category\": \"A\"}")
    write("request", "recommend_bad", "\x00{\"user\": \"u1\", \"history\": [], \"k\": 10.0}")
    write("request", "similar", "\x01{\"item\": \"i3\", \"k\": 4, \"category\": \"A\", \"cf_weight\": 0}")
    write("request", "similar_bad", "\x01[\"item\"]")
    write("request", "get_recommend", "\x02user=u1&k=5&category=A&category=B&explain&hour=3&hour_weight=1e-3")
    write("request", "get_recommend_history", "\x02history=i1,i2,%C3%A9&exclude=seen&diversity=0.5")
    write("request", "get_similar", "\x03item=i%203&k=4&cf_weight=0.5&k=5")
    write("request", "event", "\x04" + json.dumps(
        {"user": "u12", "item": "i3", "type": "click", "time": 1700000000, "context": {"device": "mobile"}}))
    write("request", "event_bad", "\x04{\"user\": \"\", \"item\": \"i3\", \"context\": {\"n\": 1}}")


if __name__ == "__main__":
    seeds_safetensors()
    seeds_rows()
    seeds_config()
    seeds_wordpiece()
    seeds_request()
