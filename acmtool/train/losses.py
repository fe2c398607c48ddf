"""The losses of the three phases (DESIGN.md "Conversion pipeline", after the ACM paper)."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from acmtool.layers.acm import AcmModule
from acmtool.train.options import DISTILL_WEIGHTS
from acmtool.train.tokens import real_tokens


def prefix_distillation_loss(acm: AcmModule, z: torch.Tensor, target: torch.Tensor,
                             weighting: str = "anchor", budget: Optional[float] = None) -> torch.Tensor:
    """MSE(h(z, k), f(z)) over k = max(min_k, 1)..N, scaled by the target's variance so blocks of
    any magnitude weigh alike. Learner i is in every prefix k > i, so it learns from all of them,
    not only its own. How the prefixes weigh (prefix_weights): 'anchor', the full prefix h(z, N) as
    much as all the shorter ones together; 'even', every prefix alike (the static baseline, which
    never runs N); 'usage', half alike and half by the share of this batch's tokens that the budget
    labels at `budget` send to each k.

    Why the anchor: h(z, N) starts equal to f(z) (the learners split the original's neurons) and it
    is what every token the gates send to k = N gets. Weighed like the others, distillation trades it
    for the short prefixes: Whisper tiny.en's ACM run at budget 1.0 (every token k = N) agreed with
    the original's next token on only 95.3 % of its transcripts' tokens and lost 1.53 WER points."""
    every = acm.forward_prefixes(z)  # [N + 1, T, Dout], k = 0..N
    first = max(acm.min_k, 1)
    errors = (every[first:] - target.unsqueeze(0)).pow(2).flatten(1).mean(1)  # [K]
    weights = prefix_weights(acm, every, target, weighting, budget)
    scale = target.pow(2).mean().clamp(min=1e-8)
    return (errors * weights).sum() / weights.sum() / scale


@torch.no_grad()
def prefix_weights(acm: AcmModule, every: torch.Tensor, target: torch.Tensor, weighting: str,
                   budget: Optional[float] = None) -> torch.Tensor:
    """The weight of each prefix k = max(min_k, 1)..N in prefix_distillation_loss. 'usage' spends
    half the weight where the budget sends tokens: at a low budget most tokens get one or two
    learners and the anchor's weight on h(z, N) serves few of them."""
    first = max(acm.min_k, 1)
    count = acm.num_learners + 1 - first
    weights = torch.ones(count, device=every.device, dtype=every.dtype)
    if weighting == "even" or count == 1:
        return weights
    if weighting == "anchor":
        weights[-1] = count - 1
        return weights
    if weighting != "usage" or budget is None:
        raise ValueError(f"prefix weighting {weighting!r} (budget {budget}): one of {DISTILL_WEIGHTS}, "
                         f"'usage' with a budget")
    ks = budget_gate_labels(acm, None, target, budget, prefixes=every[acm.min_k:]) + acm.min_k
    share = torch.bincount(ks.reshape(-1), minlength=acm.num_learners + 1)[first:].to(weights)
    return weights / count + share / max(ks.numel(), 1)


@torch.no_grad()
def gate_labels(acm: AcmModule, z: torch.Tensor, target: torch.Tensor, tau: float) -> torch.Tensor:
    """Per token: the smallest k after which one more learner no longer cuts the error to below
    tau times what it was. Returned as a choice index (k - min_k)."""
    prefixes = acm.forward_prefixes(z)[acm.min_k:]  # [C, T, Dout], k = min_k..N
    err = (prefixes - target.unsqueeze(0)).pow(2).mean(-1)  # [C, T]
    improves = err[1:] < tau * err[:-1]  # [C-1, T]: going from choice c to c+1 helps enough
    # the first c where the next learner does not help enough; C-1 (all learners) when each helps
    stop = ~improves
    stop = torch.cat([stop, torch.ones_like(stop[:1])], 0)
    return stop.float().argmax(0)


@torch.no_grad()
def budget_gate_labels(acm: AcmModule, z: Optional[torch.Tensor], target: torch.Tensor, budget: float,
                       prefixes: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per token: the k that an oracle with this batch's errors would spend at the budget, i.e.
    argmin_k rel_err_k(t) + mu * k / N, with mu found by bisection so that the mean k / N matches
    the budget. rel_err_k(t) is the token's error relative to its own output's size, so every token
    counts alike: with absolute errors the few tokens whose outputs are huge (BERT's special tokens
    and outlier dimensions) took the learners, the other tokens got k = 0 or 1, and MiniLM's
    embeddings came out worse than with the same k for every token (cosine 0.878 vs 0.880; 0.932 with
    relative errors). Tokens whose error falls fast get more learners; the labels spread over every k
    instead of piling on N (what the tau rule gives for well-distilled learners).
    Returned as a choice index (k - min_k). prefixes: h(z, k) for k = min_k..N where the caller
    has them already (z is then not read)."""
    if prefixes is None:
        prefixes = acm.forward_prefixes(z)[acm.min_k:]  # [C, T, Dout], k = min_k..N
    size = target.pow(2).mean(-1)  # [T]
    # a floor at 1 % of the median size (the median: the huge tokens must not move it): a token
    # whose output is almost nothing has no error worth learners, rather than a relative error
    # that outweighs the whole budget
    err = (prefixes - target.unsqueeze(0)).pow(2).mean(-1) / size.clamp(min=1e-2 * float(size.median()) + 1e-12)
    ks = (torch.arange(err.shape[0], device=err.device, dtype=err.dtype) + acm.min_k).unsqueeze(1)
    n = acm.num_learners

    def choose(mu: float) -> torch.Tensor:
        return (err + mu * ks / n).argmin(0)
    lo, hi = 0.0, 1.0
    while (choose(hi).float() + acm.min_k).mean() / n > budget and hi < 1e6:
        hi *= 2
    for _ in range(30):  # spend falls as mu rises
        mid = (lo + hi) / 2
        if (choose(mid).float() + acm.min_k).mean() / n > budget:
            lo = mid
        else:
            hi = mid
    return choose(hi)


@torch.no_grad()
def loss_aware_gate_labels(acms: list[AcmModule], captures: list[tuple], budget: float,
                           with_costs: bool = False):
    """Per token of every block at once: the k that an oracle spends at the budget when an error
    costs what it does to the model's output. captures: (z, f(z), g) per ACM, g from a Fisher probe
    (acmtool.train.sensitivity), so err_k(t) = sum_d g_td^2 (h(z, k) - f(z))_td^2 estimates the loss
    that token t's error at k adds. Labels: argmin_k err_k(t) + mu * cost_k, one mu for every block,
    found by bisection so that the FLOPs-weighted mean k / N (batch_budget's measure) is the budget.
    Learners go where the output reads them: on the demo's ViT the patch tokens of the last block
    (no head reads them) get k = 0, and the blocks before get their learners. Choice indices (k - min_k)."""
    errs, costs = [], []
    total = sum(acm.flops_at(acm.num_learners) for acm in acms)
    for acm, (z, target, g) in zip(acms, captures):
        prefixes = acm.forward_prefixes(z)[acm.min_k:]  # [C, T, Dout]
        errs.append(((prefixes - target.unsqueeze(0)).pow(2) * g.pow(2).unsqueeze(0)).sum(-1))  # [C, T]
        ks = torch.arange(errs[-1].shape[0], device=z.device, dtype=errs[-1].dtype) + acm.min_k
        # this token's share of the budget at each k: batch_budget averages over tokens, weighs blocks by FLOPs
        costs.append((acm.flops_at(acm.num_learners) / total) * (ks / acm.num_learners / max(z.shape[0], 1)))

    def choose(mu: float) -> list[torch.Tensor]:
        return [(e + mu * c.unsqueeze(1)).argmin(0) for e, c in zip(errs, costs)]

    def spent(choices) -> float:
        return float(sum(c[ch].sum() for c, ch in zip(costs, choices)))

    def result(mu: float):
        if not with_costs:
            return choose(mu)
        return choose(mu), [e + mu * c.unsqueeze(1) for e, c in zip(errs, costs)]
    if spent(choose(0.0)) <= budget:  # the budget covers every learner that reduces an error
        return result(0.0)
    # mu brackets: errors come in the units of the probe, so start from their own scale
    hi = float(sum(float(e.max()) for e in errs)) + 1e-30
    while spent(choose(hi)) > budget and hi < 1e30:
        hi *= 4
    lo = 0.0
    for _ in range(60):  # spend falls as mu rises
        mid = (lo + hi) / 2 if lo > 0 else hi / 1024
        if spent(choose(mid)) > budget:
            lo = mid
        else:
            hi = mid
    return result(hi)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """KL(teacher || student) on softened logits."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, -1), F.log_softmax(teacher_logits / t, -1),
                    log_target=True, reduction="batchmean") * t * t


def embedding_distillation_loss(student_hidden, teacher_hidden, student_emb, teacher_emb, mask=None,
                                scale: Optional[torch.Tensor] = None):
    """For models without a head: MSE on the final hidden states (scaled by their variance, real
    tokens only) plus 1 - cosine of the pooled embeddings; with scale (the original's per-dimension
    spread, acmtool.train.feature_scale), plus the MSE of the pooled embeddings in those units: what
    a linear head on the original's standardised features sees."""
    pooled = 1 - F.cosine_similarity(student_emb, teacher_emb, dim=-1).mean()
    if scale is not None:
        pooled = pooled + ((student_emb - teacher_emb) / scale).pow(2).mean()
    if student_hidden is None:
        return pooled
    diff = (student_hidden - teacher_hidden).pow(2).mean(-1)
    size = teacher_hidden.pow(2).mean().clamp(min=1e-8)
    if mask is not None:
        m = mask.to(diff.dtype)
        mse = (diff * m).sum() / m.sum().clamp(min=1)
    else:
        mse = diff.mean()
    return mse / size + pooled


def gate_choice_probs(acm: AcmModule, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    return F.softmax(real_tokens(acm.last_logits, mask), -1)


def batch_budget(acms: list[AcmModule], onehots: list[torch.Tensor],
                 mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """beta of this batch from the straight-through one-hots, so its gradient reaches the gates:
    the mean of k / N over real tokens, each ACM weighted by its full learner FLOPs times its tokens
    (as acmtool.cost.budget weighs them: an encoder-decoder's ACMs see different numbers of tokens,
    Whisper's encoder 1500 a clip, its decoder a few words)."""
    num, den = 0.0, 0.0
    for acm, onehot in zip(acms, onehots):
        ks = torch.arange(onehot.shape[-1], device=onehot.device, dtype=onehot.dtype) + acm.min_k
        k = (real_tokens(onehot, mask) * ks).sum(-1)  # per token
        if k.numel() == 0:  # no real token reached this ACM: nothing spent, nothing to weigh
            continue
        w = acm.flops_at(acm.num_learners) * k.numel()
        num = num + w * (k.mean() / acm.num_learners)
        den += w
    return num / den if den else torch.zeros(())


def budget_loss(beta: torch.Tensor, target: float) -> torch.Tensor:
    return (beta - target) ** 2


def entropy_loss(probs: list[torch.Tensor]) -> torch.Tensor:
    """Mean per-token entropy of the gates' choices (normalised to [0, 1]): low means decisive."""
    terms = [-(p * p.clamp(min=1e-9).log()).sum(-1).mean() / torch.log(torch.tensor(float(p.shape[-1])))
             for p in probs]
    return torch.stack(terms).mean()


def diversity_loss(probs: list[torch.Tensor]) -> torch.Tensor:
    """Minus the entropy of each gate's batch-mean choice distribution (normalised): low when
    the tokens of a batch spread over several k instead of all taking the same one."""
    terms = []
    for p in probs:
        mean = p.mean(0)
        terms.append((mean * mean.clamp(min=1e-9).log()).sum() / torch.log(torch.tensor(float(p.shape[-1]))))
    return torch.stack(terms).mean()
