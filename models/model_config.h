#pragma once
/// The `model:` section of the configuration: the reference recommender of
/// docs/architecture.md ("The model", `type: bert_attn`). Defaults are the
/// `bench-tiny` model of bench/README.md (the PyTorch peer's) with two
/// exceptions that make a config of data paths alone train: the vocabulary
/// follows the dataset (bert.vocab_size 0) and, without a pretrained
/// encoder, every BERT weight is trained (lora.r 0; adapters over a random
/// frozen BERT learn little). The bench workloads set 30522 and r 8.
///
///   model:
///     dim: 128
///     bert: {pretrained: models/bert-mini}   # HF directory; "" builds from the keys
///     lora: {r: 8, alpha: 16, targets: [query, value]}
///     user: {history: 20, heads: 2, layers: 0}
///     loss: {negatives: in_batch, temperature: 1.0}
///
/// Field checks (ranges, choices) run while reading; the constraints that tie
/// two keys together (`dim` divisible by `user.heads`, ...) are checked by
/// `ModelConfig::validate()`, which every model constructor calls.
/// No tensors here: this header is read by the config tooling too.

#include <string>
#include <vector>

#include "common/config.h"

namespace llmrec {

/// `model.bert`: the item tower's BERT (HF `BertModel` semantics).
struct ModelBertConfig {
  std::string pretrained;  ///< HF model directory; "" = random init from the keys below
  int layers = 2;
  int hidden = 128;
  int heads = 2;
  int intermediate = 512;
  int vocab_size = 0;
  int max_positions = 512;
  double dropout = 0.0;
  bool add_pooler = false;
  bool freeze = false;

  template <class V>
  void visit(V& v) {
    v.field("pretrained", pretrained,
            "HF model directory (config.json, model.safetensors); its config.json then sets the "
            "architecture and the keys layers..dropout below are ignored (add_pooler and freeze apply). "
            "\"\" builds a randomly initialised BERT from those keys");
    v.field("layers", layers,
            "Transformer layers (num_hidden_layers); 0 = the embeddings alone (word piece + position, "
            "LayerNorm): with pooling mean a bag of word pieces, cheap enough to encode the whole "
            "catalogue every step (model.loss.negatives: all)",
            config_range(0, 128));
    v.field("hidden", hidden, "Hidden size H (hidden_size)", config_range(1, 65536));
    v.field("heads", heads, "Attention heads (num_attention_heads); must divide hidden",
            config_range(1, 1024));
    v.field("intermediate", intermediate, "Feed-forward size (intermediate_size)", config_range(1, 1 << 20));
    v.field("vocab_size", vocab_size,
            "WordPiece vocabulary size; 0 = the dataset's vocabulary (set by training from data.dataset)",
            config_range(0, 10000000));
    v.field("max_positions", max_positions,
            "Position embeddings (max_position_embeddings); must be >= model.text_len",
            config_range(1, 65536));
    v.field("dropout", dropout,
            "Dropout of hidden states and attention probabilities (hidden_dropout_prob and "
            "attention_probs_dropout_prob)",
            config_range(0.0, 0.99));
    v.field("add_pooler", add_pooler,
            "Build the pooler (dense+tanh over [CLS]); the recommender reads h_[CLS] itself, so the "
            "pooler is always frozen and only counts as a frozen parameter");
    v.field("freeze", freeze,
            "Train no BERT weight and add no adapters (model.lora.r must be 0): the encoder, in "
            "inference mode (no dropout), is a fixed function of an item's text, e.g. a pre-trained "
            "one (pretrained). Training computes each item's pooled output once and keeps it, so a "
            "full softmax over the catalogue costs what the bag of word pieces costs; item_proj, the "
            "ID vectors and the user tower train");
  }
};

/// `model.lora.adaptive`: AdaLoRA (HF PEFT's AdaLoraConfig; models/adalora.h).
struct ModelAdaLoraConfig {
  bool enabled = false;
  int target_r = 8;
  int tinit = 0;
  int tfinal = 0;
  int delta_t = 1;
  double beta1 = 0.85;
  double beta2 = 0.85;
  double orth_reg_weight = 0.5;
  int total_step = 0;

  template <class V>
  void visit(V& v) {
    v.field("enabled", enabled,
            "AdaLoRA: adapters in SVD form (B diag(E) A, scaling alpha / r) start at rank model.lora.r "
            "(PEFT's init_r) and are pruned by importance to target_r per module on average "
            "(docs/models.md)");
    v.field("target_r", target_r, "Average rank per adapted module after pruning", config_range(0, 4096));
    v.field("tinit", tinit, "Steps at the full rank before pruning starts", config_range(0, 1000000000));
    v.field("tfinal", tfinal, "Steps at the final budget at the end of the run", config_range(0, 1000000000));
    v.field("delta_t", delta_t, "Steps between two allocations while the budget falls (PEFT's deltaT)",
            config_range(1, 1000000000));
    v.field("beta1", beta1, "Smoothing of the importance |w x grad w|", config_range(0.0, 0.9999));
    v.field("beta2", beta2, "Smoothing of its uncertainty", config_range(0.0, 0.9999));
    v.field("orth_reg_weight", orth_reg_weight,
            "Weight of the orthogonality penalty mean ||A A^T - I||_F, ||B^T B - I||_F added to the loss",
            config_range(0.0, 1e6));
    v.field("total_step", total_step,
            "Steps the schedule spans (PEFT's total_step); 0 = the run's planned steps, which training "
            "writes here (so the checkpoint and the saved adapter carry it)",
            config_range(0, 2000000000));
  }
};

/// `model.lora`: low-rank adapters on the frozen BERT (HF PEFT semantics).
struct ModelLoraConfig {
  int r = 0;
  double alpha = 16.0;
  double dropout = 0.0;
  std::vector<std::string> targets = {"query", "value"};
  ModelAdaLoraConfig adaptive;

  template <class V>
  void visit(V& v) {
    v.field("r", r,
            "Adapter rank (with adaptive: the initial rank); 0 = no adapters: every BERT weight is trained "
            "(full fine-tuning)",
            config_range(0, 4096));
    v.field("alpha", alpha, "Scale numerator: the update is (alpha / r) B A x", config_range(1e-6, 1e6));
    v.field("dropout", dropout, "Dropout on the adapter input", config_range(0.0, 0.99));
    v.field("targets", targets,
            "Names of the BERT Linear modules that get adapters, in every layer (e.g. query, key, "
            "value, dense)");
    v.section("adaptive", adaptive, "AdaLoRA: adapters whose ranks training allocates");
  }
};

/// `model.user`: the user tower (attention ranker over the history).
struct ModelUserConfig {
  int history = 20;
  int heads = 2;
  int layers = 0;
  std::string pooling = "attention";
  double dropout = 0.0;
  int ff_dim = 0;
  std::string activation = "gelu";
  bool projection = true;
  std::vector<std::string> time_features;
  std::vector<std::string> context_columns;
  bool profile = false;

  template <class V>
  void visit(V& v) {
    v.field("history", history,
            "T: the most recent T history items pooled into the user vector (with attention "
            "pooling, a learned position embedding per slot)",
            config_range(1, 4096));
    v.field("heads", heads,
            "Attention heads of the pooling (and of the encoder layers); must divide model.dim",
            config_range(1, 1024));
    v.field("layers", layers,
            "Transformer encoder layers (self-attention over the history, padding masked, "
            "post-LN, GELU, feed-forward 4 x dim) before the pooling; 0 = the pooling alone",
            config_range(0, 64));
    v.field("pooling", pooling,
            "How the history becomes the user vector: attention = one learned query attends over "
            "the items tagged with their position (order-aware); mean = the average of the items "
            "(order-blind, the YouTube-DNN tower), which learns faster where order says little; "
            "causal = causal self-attention over the position-tagged items, the user vector being "
            "the output at the most recent item (SASRec), trained with a next-item loss at every "
            "position of every training sequence in one pass (docs/ranker.md)",
            config_one_of({"attention", "mean", "causal"}));
    v.field("dropout", dropout,
            "Dropout on attention probabilities and encoder residual branches (with pooling causal "
            "also on the input item vectors, as SASRec)",
            config_range(0.0, 0.99));
    v.field("ff_dim", ff_dim,
            "Feed-forward width of the encoder layers; 0 = 4 x model.dim (SASRec: model.dim)",
            config_range(0, 1 << 20));
    v.field("activation", activation, "Feed-forward activation of the encoder layers (SASRec: relu)",
            config_one_of({"gelu", "relu"}));
    v.field("projection", projection,
            "Learn a final Linear(d, d) after the tower's LayerNorm (u = proj(norm(h))); false: u = norm(h), "
            "SASRec's output");
    v.field("time_features", time_features,
            "Time features learned from the events' times (any of gap, weekday, hour; empty = none): "
            "each history slot adds the embedding of its event's features (gap = since the event "
            "before it), and the user vector adds an embedding of the features of the time the "
            "recommendation is for (its gap since the last history event); docs/ranker.md");
    v.field("context_columns", context_columns,
            "Context columns (names among data.columns.context) learned like the time features: each "
            "history slot adds the embedding of its event's value, the user vector that of the "
            "request's (serving: the request's context); docs/ranker.md");
    v.field("profile", profile,
            "Read each user's profile text (data.users: age band, region, stated interests, ...) "
            "through the item encoder and feed it to the user tower as one more token before the "
            "history, so users with few events are recommended from what they said about "
            "themselves; needs model.item_text and a dataset prepared with data.users "
            "(docs/ranker.md)");
  }
};

/// `model.loss`: the sampled-softmax recommender loss (models/loss.h).
struct ModelLossConfig {
  std::string negatives = "in_batch";
  int sampled_negatives = 0;
  bool logq_correction = false;
  double temperature = 1.0;

  template <class V>
  void visit(V& v) {
    v.field("negatives", negatives,
            "Candidates each positive competes with: in_batch = the unique targets of the batch "
            "(as the PyTorch peer); batch_items = every unique item encoded for the batch "
            "(targets, history items and sampled negatives); all = every item with training events (a "
            "full softmax, as SASRec-CE: cheap with item_text false or bert.layers 0, every item's "
            "text encoded per step otherwise, a share of them with train.item_cache_refresh)",
            config_one_of({"in_batch", "batch_items", "all"}));
    v.field("sampled_negatives", sampled_negatives,
            "Extra negatives the batch builder draws per batch and appends as candidates "
            "(0 = none); an item equal to a user's target is never that user's negative",
            config_range(0, 1 << 20));
    v.field("logq_correction", logq_correction,
            "Subtract log q(item) (the item's probability of being a candidate, from the batch "
            "builder) from every candidate logit, to undo the popularity bias of in-batch negatives");
    v.field("temperature", temperature, "Logits are u^T A l / temperature", config_range(1e-4, 1e4));
  }
};

/// The `model:` section.
struct ModelConfig {
  std::string type = "bert_attn";
  int dim = 128;
  int text_len = 32;
  bool item_id_embedding = false;
  bool item_text = true;
  std::string pooling = "cls";
  double id_dropout = 0.1;
  std::string score = "bilinear";
  ModelBertConfig bert;
  ModelLoraConfig lora;
  ModelUserConfig user;
  ModelLossConfig loss;

  template <class V>
  void visit(V& v) {
    v.field("type", type, "Model family (docs/architecture.md, The model)", config_one_of({"bert_attn"}));
    v.field("dim", dim, "d: size of item and user vectors (item vector = Linear(H, d)(h_[CLS]))",
            config_range(1, 65536));
    v.field("text_len", text_len, "L: item text length in WordPiece tokens, [CLS] and [SEP] included",
            config_range(2, 65536));
    v.field(
        "pooling", pooling,
        "Item text vector from BERT's output: cls = h_[CLS] (BERT's first token); mean = mean of the token "
        "outputs (padding excluded), which carries the words' identity from the first step even "
        "with an untrained encoder",
        config_one_of({"cls", "mean"}));
    v.field("item_id_embedding", item_id_embedding,
            "Add a learned vector per training item to its text vector (items unseen in training "
            "use text only)");
    v.field("item_text", item_text,
            "Read the item text: false = the item vector is its ID vector alone (no BERT; needs "
            "item_id_embedding; cold items get a zero vector). With the causal user tower this is "
            "SASRec (configs/sasrec.yaml)");
    v.field("id_dropout", id_dropout,
            "Training only: probability that an item's ID vector is dropped (zeroed, not "
            "rescaled) for a batch, so the model also learns to rank from text alone (ignored "
            "with item_text: false)",
            config_range(0.0, 1.0));
    v.field(
        "score", score,
        "How a user vector u meets an item vector l: bilinear = u^T A l with A learned (initialised to the "
        "identity); dot = u . l, SASRec's score",
        config_one_of({"bilinear", "dot"}));
    v.section("bert", bert, "Item tower: BERT encoder");
    v.section("lora", lora, "Item tower: LoRA adapters");
    v.section("user", user, "User tower: attention ranker over the history");
    v.section("loss", loss, "Recommender loss");
  }

  /// Throws ConfigError listing every constraint between keys that does
  /// not hold (each message names the keys, "model.dim", ...).
  void validate() const;
};

}  // namespace llmrec
