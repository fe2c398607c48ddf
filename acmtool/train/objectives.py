"""The three phases' objectives as modules, so that DistributedDataParallel can wrap them."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from acmtool.io.call import hidden_states, main_output, per_token, run_model, token_mask
from acmtool.layers.acm import AcmModule
from acmtool.train.losses import (
    batch_budget,
    budget_gate_labels,
    budget_loss,
    diversity_loss,
    embedding_distillation_loss,
    entropy_loss,
    gate_choice_probs,
    gate_labels,
    kd_loss,
    loss_aware_gate_labels,
    prefix_distillation_loss,
)
from acmtool.train.tokens import real_tokens


def _acm_dict(acms: dict[str, AcmModule]) -> nn.ModuleDict:
    return nn.ModuleDict({name.replace(".", "/"): m for name, m in acms.items()})


class DistillObjective(nn.Module):
    """Phase 1: every prefix h(z, k) of every ACM towards the original block's output f(z), the
    prefixes weighed as `weighting` says (prefix_distillation_loss)."""

    def __init__(self, acms: dict[str, AcmModule], weighting: str = "anchor", budget: Optional[float] = None):
        super().__init__()
        self.acms = _acm_dict(acms)
        self.weighting, self.budget = weighting, budget

    def forward(self, captures: dict) -> torch.Tensor:
        losses = [prefix_distillation_loss(self.acms[n.replace(".", "/")], z, y, self.weighting, self.budget)
                  for n, (z, y) in captures.items()]
        return torch.stack(losses).mean()


# 'loss' labels: the weight of the expected regret next to the cross-entropy. Cross-entropy alone
# counts every wrong choice alike, and the gates (a small MLP that sees one token) miss cheaply
# predictable labels as often as costly ones; the regret term makes a mistake weigh what it costs
# the output. On the demo's ViT at budget 0.25, before fine-tuning: top-1 agreement with the dense
# model 0.976 with it (weight 10), 0.954 without (1: 0.962); the static baseline 0.977.
REGRET_WEIGHT = 10.0


class GateObjective(nn.Module):
    """Phase 2: each gate learns its labels by cross-entropy; learners frozen. Labels: 'loss' (the
    oracle allocation at the target budget, every block at once, errors weighed by what they cost
    the output: the captures carry the Fisher probe's gradients), 'budget' (the oracle allocation
    per block, errors relative to each token's output) or 'tau' (DESIGN.md's relative-gain rule)."""

    def __init__(self, acms: dict[str, AcmModule], tau: float, labels: str = "budget", budget: float = 0.5):
        super().__init__()
        self.acms = _acm_dict(acms)
        self.tau, self.labels, self.budget = tau, labels, budget

    @torch.no_grad()
    def prepare(self, captures: dict) -> dict:
        """Every ACM's labels over the whole batch (the 'loss' labels allocate over every block and
        token at once), and for 'loss' each choice's regret and the batch's mean regret."""
        acms = [self.acms[n.replace(".", "/")] for n in captures]
        if self.labels == "loss":
            joint, lagrangian = loss_aware_gate_labels(acms, list(captures.values()), self.budget, with_costs=True)
            # regret: what each choice costs over the best one, in units of the batch's mean regret
            regrets = [c - c.min(0, keepdim=True).values for c in lagrangian]  # [C, T]
            scale = torch.cat([r.reshape(-1) for r in regrets]).mean().clamp(min=1e-30)
            return {"labels": joint, "regrets": regrets, "scale": scale}
        rule = (lambda acm, z, y: gate_labels(acm, z, y, self.tau)) if self.labels == "tau" else \
            (lambda acm, z, y: budget_gate_labels(acm, z, y, self.budget))
        return {"labels": [rule(acm, z, y) for acm, (z, y, *_) in zip(acms, captures.values())]}

    def forward(self, captures: dict, prepared: Optional[dict] = None,
                rows: Optional[list] = None) -> tuple[torch.Tensor, float]:
        """The gates' loss and label accuracy; rows: per ACM, the tokens of this step (a part of the
        batch that `prepare` labelled as a whole; acmtool.train.token_chunks), else every token."""
        prepared = prepared if prepared is not None else self.prepare(captures)
        losses, accs = [], []
        for i, (name, (z, *_)) in enumerate(captures.items()):
            acm = self.acms[name.replace(".", "/")]
            part = rows[i] if rows is not None else slice(None)
            labels = prepared["labels"][i][part]
            logits = acm.gate(z[part])
            loss = F.cross_entropy(logits, labels)
            if "regrets" in prepared:
                regret = prepared["regrets"][i][:, part]
                loss = loss + REGRET_WEIGHT * (F.softmax(logits, -1) * regret.t()).sum(-1).mean() / prepared["scale"]
            losses.append(loss)
            accs.append((logits.argmax(-1) == labels).float().mean())
        return torch.stack(losses).mean(), float(torch.stack(accs).mean().detach())


class FinetuneObjective(nn.Module):
    """Phase 3: the task loss (distillation from the frozen original; + cross-entropy with labels),
    and, while the gates train (gate_losses), the budget, entropy and diversity losses on their
    choices. The batch's achieved budget is reported either way."""

    def __init__(self, student: nn.Module, acms: dict[str, AcmModule], target: Optional[float],
                 weights: tuple[float, float, float], use_labels: bool, gate_losses: bool = True,
                 embedding_scale: Optional[torch.Tensor] = None):
        super().__init__()
        self.embedding_scale = embedding_scale  # the original's per-dimension spread (embedding models)
        self.student = student
        self.acm_list = list(acms.values())
        self.target = target  # None: a static model, no gates
        self.w_budget, self.w_entropy, self.w_diversity = weights
        self.use_labels = use_labels
        self.gate_losses = gate_losses

    def forward(self, inputs, labels: torch.Tensor, teacher_out) -> tuple[torch.Tensor, dict]:
        out = run_model(self.student, inputs)
        mask = token_mask(inputs, self.student)
        kind, s_main = main_output(out, mask)
        _, t_main = main_output(teacher_out, mask)
        if kind == "logits":
            task = kd_loss(s_main, t_main)
            if labels.dim() == 2:  # per-token labels (a decoder's): one row per real token, as s_main
                labels = per_token(labels, mask)
            if self.use_labels and (labels >= 0).any():
                task = task + F.cross_entropy(s_main[labels >= 0], labels[labels >= 0])
        else:
            task = embedding_distillation_loss(hidden_states(out), hidden_states(teacher_out), s_main, t_main, mask,
                                               scale=self.embedding_scale)
        stats = {"task": float(task.detach())}
        loss = task
        used = [a for a in self.acm_list if a.last_onehot is not None]
        if self.target is not None:
            # real tokens in this batch (0: padding only, no budget to measure); every rank reports
            # both, so that steering's all-reduces line up under DDP
            tokens = len(real_tokens(used[0].last_onehot, mask)) if used else 0
            stats["tokens"], stats["budget"] = float(tokens), 0.0
            if tokens:
                beta = batch_budget(used, [a.last_onehot for a in used], mask)
                stats["budget"] = float(beta.detach())
                if self.gate_losses:
                    probs = [gate_choice_probs(a, mask) for a in used]
                    loss = (loss + self.w_budget * budget_loss(beta, self.target)
                            + self.w_entropy * entropy_loss(probs) + self.w_diversity * diversity_loss(probs))
        return loss, stats
