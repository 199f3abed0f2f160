#!/usr/bin/python3
"""A bag-of-words reference recommender for the synthetic shop (docs/results.md).

How well can a two-tower model with the simplest possible text encoder learn
the shop's preferences? This trains one in a few seconds and prints its
NDCG@10 on the same protocol as `llmrec eval` (leave-last-out split: each
user's last event is the test target, the one before it the validation
target; history = all earlier events, excluded from the ranking; full
ranking over the catalogue, ties counted against the target). It reproduces
eval's popularity figures (`--popularity`).

Model (the quickstart's, with the BERT replaced by a bag of words):
  item vector = Linear(mean over the item's words of E[word])  [+ ID vector]
      E[word]: an embedding of each lower-cased word of the whole catalogue
      text; with --bert-embeddings, LayerNorm(word + position embedding) as
      BERT's embedding layer (a 0-layer BERT with mean pooling)
      ID vectors only for items with training events, dropped with
      probability --id-dropout in training; cold items are text only
  user vector = Linear(LayerNorm(pool(last T history item vectors)))
      pool: mean, or attention of one learned query over the items plus
      learned position vectors (--user attention)
  loss: softmax over the batch's unique targets, logits u.v / tau - log q
      (q: the item's share of training events), AdamW, warm-up 5% + cosine.

Usage: /usr/bin/python3 tools/bow_reference.py SHOP_DIR [--epochs 5] [--tau 0.5] ...
(needs python3-torch: apt-get install python3-torch)
"""
import argparse
import collections
import csv
import math
import re

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def load(shop):
    cat = list(csv.DictReader(open(f"{shop}/catalogue.csv")))
    index = {r["item_id"]: i for i, r in enumerate(cat)}
    vocab, words = {}, []
    for r in cat:
        text = " ".join([r["title"], r["category"], r["brand"], r["tags"].replace(";", " "), r["description"]])
        words.append([vocab.setdefault(w, len(vocab)) for w in re.findall(r"[a-z0-9]+", text.lower())])
    tokens = np.full((len(cat), max(map(len, words))), -1, np.int64)
    for i, w in enumerate(words):
        tokens[i, : len(w)] = w
    events = collections.defaultdict(list)
    for r in csv.DictReader(open(f"{shop}/interactions.csv")):
        events[r["user_id"]].append((r["timestamp"], index[r["item_id"]]))
    users = [[i for _, i in sorted(e)] for _, e in sorted(events.items()) if len(e) >= 3]
    cold = np.zeros(len(cat), bool)
    for r in csv.DictReader(open(f"{shop}/latent_items.csv")):
        cold[index[r["item_id"]]] = r["cold"] == "1"
    return torch.tensor(tokens), len(vocab), users, torch.tensor(cold)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("shop")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--history", type=int, default=20)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--id-dropout", type=float, default=0.3)
    p.add_argument("--user", choices=["mean", "attention"], default="mean")
    p.add_argument("--bert-embeddings", action="store_true")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--popularity", action="store_true", help="print popularity's figures and stop")
    p.add_argument("--cold-shift", type=float, nargs="*", default=[],
                   help="also print test figures with this constant added to every cold item's logit (u.v / tau)")
    a = p.parse_args()
    torch.manual_seed(a.seed)
    rng = np.random.default_rng(a.seed)
    torch.set_num_threads(2)
    tokens, n_words, users, cold = load(a.shop)
    N, d, T = tokens.shape[0], a.dim, a.history
    train = [s[:-2] for s in users]
    counts = torch.zeros(N)
    for s in train:
        counts.index_add_(0, torch.tensor(s, dtype=torch.long), torch.ones(len(s)))
    warm = counts > 0
    log_q = torch.log((counts + 1) / (counts.sum() + N))
    word_mask = (tokens >= 0).float()
    tokens = tokens.clamp_min(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.words = nn.Embedding(n_words, d)
            if a.bert_embeddings:
                nn.init.normal_(self.words.weight, 0, 0.02)
                self.word_positions = nn.Parameter(torch.randn(tokens.shape[1], d) * 0.02)
                self.word_norm = nn.LayerNorm(d)
            self.text_proj = nn.Linear(d, d)
            self.ids = nn.Embedding(N, d)
            nn.init.normal_(self.ids.weight, 0, 1 / math.sqrt(d))
            if a.user == "attention":
                self.positions = nn.Parameter(torch.randn(T, d) * 0.02)
                self.query = nn.Parameter(torch.randn(1, 1, d) * 0.02)
                self.attn = nn.MultiheadAttention(d, 2, batch_first=True)
            self.norm = nn.LayerNorm(d)
            self.proj = nn.Linear(d, d)

        def items(self, idx):
            x = self.words(tokens[idx])
            if a.bert_embeddings:
                x = self.word_norm(x + self.word_positions)
            m = word_mask[idx].unsqueeze(-1)
            v = self.text_proj((x * m).sum(1) / m.sum(1))
            has_id = warm[idx].float()
            if self.training and a.id_dropout > 0:
                has_id = has_id * (torch.rand(len(idx)) >= a.id_dropout).float()
            return v + self.ids(idx) * has_id.unsqueeze(1)

        def user(self, h, mask):  # [B, T, d], [B, T] (1 = item)
            if a.user == "mean":
                pooled = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
            else:
                q = self.query.expand(len(h), 1, d)
                pooled = self.attn(q, h + self.positions, h + self.positions, key_padding_mask=mask == 0)[0][:, 0]
                pooled = pooled.masked_fill(mask.sum(1, keepdim=True) == 0, 0)
            return self.proj(self.norm(pooled))

    def histories(seqs):
        rows = torch.zeros(len(seqs), T, dtype=torch.long)
        mask = torch.zeros(len(seqs), T)
        for r, h in enumerate(seqs):
            h = h[-T:]
            if h:
                rows[r, T - len(h):] = torch.tensor(h)
                mask[r, T - len(h):] = 1
        return rows, mask

    def evaluate(score, split):
        """NDCG@10 and cold NDCG@10 of score(histories) -> [B, N] on a split."""
        k = 2 if split == "valid" else 1
        total = cold_total = n_cold = 0.0
        with torch.no_grad():
            for start in range(0, len(users), 500):
                block = users[start:start + 500]
                hist = [s[:-k] for s in block]
                target = torch.tensor([s[-k] for s in block])
                scores = score(hist)
                for r, h in enumerate(hist):
                    scores[r, h] = -math.inf
                at_target = scores[torch.arange(len(block)), target]
                rank = (scores >= at_target.unsqueeze(1)).sum(1) - 1
                gain = torch.where(rank < 10, 1 / torch.log2(rank.float() + 2), torch.zeros(len(block)))
                total += gain.sum().item()
                c = cold[target]
                cold_total += gain[c].sum().item()
                n_cold += c.sum().item()
        return total / len(users), cold_total / max(n_cold, 1)

    def model_scorer(model, shift=0.0):
        """The model's logits u.v / tau, `shift` added to every cold item's."""
        model.eval()
        with torch.no_grad():
            items = model.items(torch.arange(N))
        model.train()

        def score(hist):
            rows, mask = histories(hist)
            return model.user(items[rows], mask) @ items.t() / a.tau + shift * cold.float()
        return score

    if a.popularity:
        for split in ("valid", "test"):
            ndcg, cold_ndcg = evaluate(lambda hist: torch.log(counts + 1).expand(len(hist), N).clone(), split)
            print(f"popularity {split} NDCG@10 {ndcg:.4f} cold {cold_ndcg:.4f}")
        return

    examples = [(u, j) for u, s in enumerate(train) for j in range(1, len(s))]
    model = Model()
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.0)
    steps = a.epochs * math.ceil(len(examples) / a.batch)
    step = 0
    for epoch in range(a.epochs):
        order = rng.permutation(len(examples))
        for start in range(0, len(order), a.batch):
            batch = [examples[i] for i in order[start:start + a.batch]]
            rows, mask = histories([train[u][max(0, j - T):j] for u, j in batch])
            target = torch.tensor([train[u][j] for u, j in batch])
            lr = a.lr * min(1.0, step / (0.05 * steps)) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for g in opt.param_groups:
                g["lr"] = lr
            step += 1
            uniq, inverse = torch.unique(torch.cat([rows.flatten(), target]), return_inverse=True)
            v = model.items(uniq)
            u = model.user(v[inverse[:rows.numel()]].view(len(batch), T, d), mask)
            cand, col = torch.unique(target, return_inverse=True)
            logits = u @ v[torch.searchsorted(uniq, cand)].t() / a.tau - log_q[cand]
            loss = F.cross_entropy(logits, col)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}, valid NDCG@10 {evaluate(model_scorer(model), 'valid')[0]:.4f}", flush=True)
    ndcg, cold_ndcg = evaluate(model_scorer(model), "test")
    print(f"test NDCG@10 {ndcg:.4f}, cold NDCG@10 {cold_ndcg:.4f}")
    for shift in a.cold_shift:
        ndcg, cold_ndcg = evaluate(model_scorer(model, shift), "test")
        print(f"cold items' scores {shift:+g}: test NDCG@10 {ndcg:.4f}, cold NDCG@10 {cold_ndcg:.4f}")


if __name__ == "__main__":
    main()
