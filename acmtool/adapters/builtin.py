"""Built-in adapters: the timm ViT family and the Hugging Face families of DESIGN.md."""
from __future__ import annotations

import torch.nn as nn

from acmtool.adapters._registry import AttentionLayout, MlpLayout, register_adapter


def _timm_mlp_check(mlp: nn.Module):
    if not isinstance(getattr(mlp, "norm", nn.Identity()), nn.Identity):
        return "its Mlp has a norm between fc1 and fc2, which an ACM cannot hold"
    return None


# timm: Block.mlp is a timm.layers.Mlp; Attention has a fused qkv and proj.
register_adapter("timm.layers.mlp.Mlp", MlpLayout("fc1", "act", "fc2", check=_timm_mlp_check), name="timm-mlp")
for _cls in ("timm.layers.attention.Attention", "timm.models.vision_transformer.Attention"):  # new, old timm
    register_adapter(_cls, attention=AttentionLayout(("qkv", "proj"), fused={"qkv": 3}), name="timm-attention")

# BERT-style layers: intermediate (dense + act) and output (dense, dropout, LayerNorm(x + residual)).
# The ACM takes the intermediate's place and computes the whole MLP; output.dense becomes identity,
# so the LayerNorm and the residual stay outside the ACM.
_BERT_MLP = MlpLayout("intermediate.dense", "intermediate.intermediate_act_fn", "output.dense",
                      replace="intermediate", identity=("output.dense",))
for _cls in ("bert.modeling_bert.BertLayer", "roberta.modeling_roberta.RobertaLayer"):
    register_adapter(f"transformers.models.{_cls}", _BERT_MLP, name="hf-bert")
for _fam, _pre in (("bert", "Bert"), ("roberta", "Roberta")):
    register_adapter(f"transformers.models.{_fam}.modeling_{_fam}.{_pre}SelfAttention",
                     attention=AttentionLayout(("query", "key", "value")), name="hf-bert-attention")
    register_adapter(f"transformers.models.{_fam}.modeling_{_fam}.{_pre}SelfOutput",
                     attention=AttentionLayout(("dense",)), name="hf-bert-attention")

# ViT / DeiT / Dinov2 (transformers 5): an MLP module with fc1, activation_fn, fc2.
for _fam, _pre in (("vit", "ViT"), ("deit", "DeiT"), ("dinov2", "Dinov2")):
    register_adapter(f"transformers.models.{_fam}.modeling_{_fam}.{_pre}MLP",
                     MlpLayout("fc1", "activation_fn", "fc2"), name=f"hf-{_fam}")
    register_adapter(f"transformers.models.{_fam}.modeling_{_fam}.{_pre}Attention",
                     attention=AttentionLayout(("q_proj", "k_proj", "v_proj", "o_proj")), name=f"hf-{_fam}-attention")

# wav2vec2: the feed-forward module as a whole (its dropouts act only in training).
register_adapter("transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2FeedForward",
                 MlpLayout("intermediate_dense", "intermediate_act_fn", "output_dense"), name="hf-wav2vec2")
register_adapter("transformers.models.wav2vec2.modeling_wav2vec2.Wav2Vec2Attention",
                 attention=AttentionLayout(("q_proj", "k_proj", "v_proj", "out_proj")), name="hf-wav2vec2-attention")

# Whisper: fc1, activation_fn and fc2 sit on the layer itself; the ACM takes fc1's place.
_WHISPER_MLP = MlpLayout("fc1", "activation_fn", "fc2", replace="fc1", identity=("activation_fn", "fc2"))
for _cls in ("WhisperEncoderLayer", "WhisperDecoderLayer"):
    register_adapter(f"transformers.models.whisper.modeling_whisper.{_cls}", _WHISPER_MLP, name="hf-whisper")
register_adapter("transformers.models.whisper.modeling_whisper.WhisperAttention",
                 attention=AttentionLayout(("q_proj", "k_proj", "v_proj", "out_proj")), name="hf-whisper-attention")
