#!/usr/bin/env python3
"""Where the synthetic shop's oracle gets its NDCG@10 (docs/results.md).

The oracle scores log popularity + match(user, item) with the generator's
latent truth. This script re-scores the test split (each user's last event;
history = all earlier events, excluded from the ranking; full ranking over
the catalogue, ties counted against the target) with parts of that truth
replaced by what the training data shows:

  popularity  the item's training-event count (log(count + 1)); cold items,
              which have none, get the mean over warm items
  oracle      true popularity + true match (the `oracle` row of llmrec eval)
  counts+match  training counts + the true match: a model that knew every
              user's preferences exactly but learned popularity from the log
  truepop+hist  true popularity + preferences estimated from the history
              (attribute counts, hand-set weights)
  counts+hist   training counts + the same history estimate: a scorer that
              uses nothing but the log and the latent attributes

Usage: tools/oracle_gap.py SHOP_DIR [variant ...]   (SHOP_DIR from llmrec synth)
"""
import collections
import csv
import math
import sys


def main():
    shop = sys.argv[1]
    variants = sys.argv[2:] or ["popularity", "oracle", "counts+match", "truepop+hist"]
    items = {}
    for r in csv.DictReader(open(f"{shop}/latent_items.csv")):
        items[r["item_id"]] = dict(leaf=r["leaf"], dep=r["department"], brand=r["brand_id"], style=r["style"],
                                   band=int(r["price_band"]), pop=float(r["popularity"]), cold=r["cold"] == "1")
    prefs = {}
    for r in csv.DictReader(open(f"{shop}/latent_users.csv")):
        prefs[r["user_id"]] = dict(leaves=set(r["leaves"].split(";")), brands=set(r["brand_ids"].split(";")),
                                   styles=set(r["styles"].split(";")), deps=set(r["departments"].split(";")),
                                   band=int(r["price_band"]))
    events = collections.defaultdict(list)
    for r in csv.DictReader(open(f"{shop}/interactions.csv")):
        events[r["user_id"]].append((r["timestamp"], r["item_id"]))
    ids = sorted(items)
    counts = collections.Counter()
    users = []
    for u, seq in events.items():
        seq = [i for _, i in sorted(seq)]
        if len(seq) < 3:
            continue
        users.append((u, seq[:-1], seq[-1]))
        counts.update(seq[:-2])  # training events: all but validation and test
    warm = [math.log(counts[i] + 1) for i in ids if not items[i]["cold"]]
    cold_pop = sum(warm) / len(warm)

    def popularity(i, true_pop):
        it = items[i]
        if true_pop:
            return math.log(it["pop"])
        return cold_pop if it["cold"] else math.log(counts[i] + 1)

    def true_match(u, it):
        p = prefs[u]
        return (2.5 * (it["leaf"] in p["leaves"]) + 0.8 * (it["dep"] in p["deps"]) + 1.2 * (it["brand"] in p["brands"])
                + 0.8 * (it["style"] in p["styles"]) - 0.5 * abs(it["band"] - p["band"]))

    def history_match(hist):
        n = len(hist)
        c = {f: collections.Counter(items[i][f] for i in hist) for f in ("leaf", "dep", "brand", "style")}
        bands = collections.Counter(items[i]["band"] for i in hist)
        lam = dict(leaf=1.0, dep=0.3, brand=0.5, style=0.3)
        sizes = dict(leaf=50, dep=10, brand=40, style=12)

        def m(it):
            s = sum(lam[f] * math.log((c[f][it[f]] + 0.5) / (n + 0.5 * sizes[f])) for f in lam)
            near = sum(k * math.exp(-0.5 * abs(b - it["band"])) for b, k in bands.items())
            return s + 0.5 * math.log((near + 0.5) / (n + 2.5))
        return m

    for v in variants:
        total = cold_total = 0.0
        n_cold = 0
        for u, hist, target in users:
            if v == "popularity":
                score = lambda i: popularity(i, False)
            elif v == "oracle":
                score = lambda i: popularity(i, True) + true_match(u, items[i])
            elif v == "counts+match":
                score = lambda i: popularity(i, False) + true_match(u, items[i])
            elif v == "counts+hist":
                hm = history_match(hist)
                score = lambda i: popularity(i, False) + hm(items[i])
            elif v == "truepop+hist":
                hm = history_match(hist)
                score = lambda i: popularity(i, True) + hm(items[i])
            else:
                sys.exit(f"unknown variant {v}")
            seen = set(hist)
            st = score(target)
            rank = sum(1 for i in ids if i not in seen and i != target and score(i) >= st)
            g = 1 / math.log2(rank + 2) if rank < 10 else 0.0
            total += g
            if items[target]["cold"]:
                cold_total += g
                n_cold += 1
        print(f"{v:14s} NDCG@10 {total / len(users):.4f}  cold NDCG@10 {cold_total / max(n_cold, 1):.4f}"
              f"  ({len(users)} users, {n_cold} with a cold test item)")


if __name__ == "__main__":
    main()
