"""Segmentation losses: loss.terms, a weighted sum of ce, focal, ohem, dice and lovasz.

Every function takes logits (N, C, H, W), int64 masks (N, H, W), the optional per-class weights
(C,) and the ignore index; pixels labelled ignore_index count nowhere. Probabilities and
log-probabilities are computed in float32 whatever the logits' dtype (autocast).

Two kinds of term, normalised differently over a step made of accumulated micro-batches and
processes (fcn.training.loop.train_one_step):

- pixel sums (``ce``, ``focal``): each returns the sum over labelled pixels of a micro-batch; the
  step divides the sum of all micro-batches of all processes by the labelled pixels (or their
  summed class weights) of that whole global batch when loss.normalize, so accumulation and DDP
  equal one large batch (and the default ``ce`` is exactly the loss this project always had).
- means per micro-batch (``ohem``, ``dice``, ``lovasz``): each returns a mean over one micro-batch
  (a ranking or a region overlap has no per-pixel sum to pool); the step averages them over its
  micro-batches and processes, whatever loss.normalize says.

A sigmoid task (data.task binary or multilabel: one logit per class, SigmoidLoss) takes the same
two kinds: ``bce`` and its ``focal`` form are sums over labelled pixel-class pairs, ``dice`` and the
Lovasz hinge (``lovasz``) means per micro-batch; its masks are (N, H, W) 0/1 for binary and
(N, C, H, W) 0/1 for multilabel, ignore_index where unlabelled, and the class weights are bce's
pos_weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from fcn.config import LOSS_NAMES, SIGMOID_TASKS, VOID
from fcn.core.tasks import as_channels

PIXEL_SUM_TERMS = ("ce", "focal", "bce")
"""Terms summed over labelled pixels and normalised over the whole step (loss.normalize)."""
BATCH_MEAN_TERMS = ("ohem", "dice", "lovasz")
"""Terms that are means over one micro-batch, averaged over the step's micro-batches and processes."""
DICE_SMOOTH = 1.0
"""Added to the numerator and the denominator of each class's soft Dice (in pixels): it keeps the
ratio defined and its gradient bounded for tiny regions, and is negligible for regions of hundreds
of pixels (the common choice in V-Net-style implementations)."""


def labelled(masks: torch.Tensor, weight: torch.Tensor | None, ignore_index: int = VOID) -> torch.Tensor:
    """Return the number of labelled pixels (or their summed class weights), a float tensor."""
    valid = masks != ignore_index
    return valid.sum().float() if weight is None else weight[masks[valid]].sum()


def cross_entropy_sum(
    logits: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """Return the cross-entropy summed over labelled pixels, each weighted by its class's weight.

    With label smoothing eps it is PyTorch's: (1 - eps) * w_y * -log p_y + eps / C * sum_c w_c * -log p_c.
    """
    return F.cross_entropy(
        logits.float(),
        masks,
        weight=weight,
        ignore_index=ignore_index,
        reduction="sum",
        label_smoothing=label_smoothing,  # 0: PyTorch's plain cross-entropy, the same kernel as before
    )


def _valid_log_probs(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log-probabilities (P, C), labels (P,)) of the labelled pixels, flattened."""
    c = logits.shape[1]
    log_p = F.log_softmax(logits.float(), dim=1).permute(0, 2, 3, 1).reshape(-1, c)
    labels = masks.reshape(-1)
    valid = labels != ignore_index
    return log_p[valid], labels[valid]


def focal_sum(
    logits: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Return the focal loss (Lin et al. 2017, eq. 5) summed over labelled pixels:
    -w_y (1 - p_y)^gamma log p_y, the class weight w_y in the role of the paper's alpha_t."""
    log_p, labels = _valid_log_probs(logits, masks, ignore_index)
    log_pt = log_p.gather(1, labels[:, None])[:, 0]
    loss = -((1.0 - log_pt.exp()).clamp_min(0) ** gamma) * log_pt
    if weight is not None:
        loss = loss * weight[labels]
    return loss.sum()


def ohem_cross_entropy(
    logits: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
    keep: float = 0.25,
) -> torch.Tensor:
    """Return the cross-entropy averaged over the micro-batch's hardest labelled pixels (online hard
    example mining): the k with the highest (unweighted) cross-entropy, where k is ceil(keep * labelled)
    for keep <= 1, else keep pixels (at most all). With class weights, their weighted mean."""
    log_p, labels = _valid_log_probs(logits, masks, ignore_index)
    if labels.numel() == 0:
        return logits.float().sum() * 0.0
    k = math.ceil(keep * labels.numel()) if keep <= 1 else min(int(keep), labels.numel())
    nll = -log_p.gather(1, labels[:, None])[:, 0]
    hard = torch.topk(nll.detach(), k, sorted=False).indices
    if weight is None:
        return nll[hard].mean()
    w = weight[labels[hard]]
    return (nll[hard] * w).sum() / w.sum().clamp_min(1e-12)


def _valid_probs_one_hot(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (probabilities (P, C), one-hot labels (P, C), labels (P,)) of the labelled pixels."""
    log_p, labels = _valid_log_probs(logits, masks, ignore_index)
    return log_p.exp(), F.one_hot(labels, log_p.shape[1]).to(log_p.dtype), labels


def _class_mean(per_class: torch.Tensor, present: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Return the (class-weighted) mean of per_class over the present classes (0 when none is)."""
    w = present.to(per_class.dtype)
    if weight is not None:
        w = w * weight.to(per_class.dtype)
    return (per_class * w).sum() / w.sum().clamp_min(1e-12)


def dice_loss(
    logits: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
    smooth: float = DICE_SMOOTH,
) -> torch.Tensor:
    """Return the soft Dice loss of a micro-batch: the mean over the classes present in its labels of
    1 - (2 sum p_c g_c + s) / (sum p_c + sum g_c + s), sums over all its labelled pixels (one
    region per class for the micro-batch) with s = DICE_SMOOTH; with class weights, the weighted
    mean over the present classes. Classes absent from the labels are left out: their Dice would
    only push predictions of them to 0, which the present classes' terms already do."""
    p, g, _ = _valid_probs_one_hot(logits, masks, ignore_index)
    intersection = (p * g).sum(0)
    dice = (2.0 * intersection + smooth) / (p.sum(0) + g.sum(0) + smooth)
    return _class_mean(1.0 - dice, g.sum(0) > 0, weight) + 0.0 * p.sum()


def _lovasz_grad(fg_sorted: torch.Tensor) -> torch.Tensor:
    """Return the gradient of the Lovasz extension of the Jaccard loss at errors sorted by decreasing
    size (Berman et al. 2018, Algorithm 1; the reference's lovasz_grad)."""
    gts = fg_sorted.sum()
    intersection = gts - fg_sorted.cumsum(0)
    union = gts + (1.0 - fg_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if fg_sorted.numel() > 1:
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def lovasz_softmax(
    logits: torch.Tensor,
    masks: torch.Tensor,
    weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
) -> torch.Tensor:
    """Return the Lovasz-softmax loss of a micro-batch (Berman et al. 2018): for each class present
    in its labels, the Lovasz extension of the Jaccard loss applied to the errors |1[y=c] - p_c| of
    all its labelled pixels, averaged over the present classes (the reference's classes='present',
    per_image=False); with class weights, their weighted mean."""
    p, g, _ = _valid_probs_one_hot(logits, masks, ignore_index)
    present = g.sum(0) > 0
    losses = []
    for c, here in enumerate(present.tolist()):
        if not here:  # one sort of all pixels per class: skip those _class_mean leaves out
            losses.append(p.new_zeros(()))
            continue
        errors = (g[:, c] - p[:, c]).abs()
        order = torch.argsort(errors.detach(), descending=True)
        losses.append(torch.dot(errors[order], _lovasz_grad(g[order, c])))
    per_class = torch.stack(losses) if losses else p.new_zeros(0)
    return _class_mean(per_class, present, weight) + 0.0 * p.sum()


@dataclass(frozen=True)
class SegmentationLoss:
    """loss.terms as a callable split in two: pixel_sum() and batch_mean() of one micro-batch.

    The step's loss is (sum over micro-batches of pixel_sum) / normaliser + mean over micro-batches
    of batch_mean (fcn.training.loop.train_one_step); either part is None when no term of its kind is set.
    """

    terms: tuple[tuple[str, float], ...] = (("ce", 1.0),)
    weight: torch.Tensor | None = None
    ignore_index: int = VOID
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    ohem_keep: float = 0.25

    def __post_init__(self) -> None:
        for name, _ in self.terms:
            if name not in LOSS_NAMES or name == "bce":
                names = ", ".join(n for n in LOSS_NAMES if n != "bce")
                raise ValueError(f"loss term '{name}' is not one of {names} (bce is a sigmoid task's)")

    def term(self, name: str, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return one term's value on a micro-batch (a pixel sum or a micro-batch mean, see the module doc)."""
        w, ignore = self.weight, self.ignore_index
        if name == "ce":
            return cross_entropy_sum(logits, masks, w, ignore, self.label_smoothing)
        if name == "focal":
            return focal_sum(logits, masks, w, ignore, self.focal_gamma)
        if name == "ohem":
            return ohem_cross_entropy(logits, masks, w, ignore, self.ohem_keep)
        if name == "dice":
            return dice_loss(logits, masks, w, ignore)
        return lovasz_softmax(logits, masks, w, ignore)

    def _weighted(
        self, names: tuple[str, ...], logits: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor | None:
        total = None
        for name, factor in self.terms:
            if name in names:
                value = self.term(name, logits, masks)
                value = value if factor == 1.0 else factor * value  # the default ce stays bit for bit
                total = value if total is None else total + value
        return total

    def pixel_sum(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the weighted sum of the ce/focal terms over the labelled pixels, or None."""
        return self._weighted(PIXEL_SUM_TERMS, logits, masks)

    def batch_mean(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the weighted sum of the ohem/dice/lovasz terms of this micro-batch, or None."""
        return self._weighted(BATCH_MEAN_TERMS, logits, masks)

    def labelled(self, masks: torch.Tensor) -> torch.Tensor:
        """Return the labelled pixels of masks (or their summed class weights): the normaliser's part."""
        return labelled(masks, self.weight, self.ignore_index)


def _sigmoid_targets(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return (float32 logits, 0/1 float targets, labelled) of a sigmoid task, all (N, C, H, W): a
    binary task's (N, H, W) masks get their one channel; pixels labelled ignore_index are not labelled."""
    masks = as_channels(masks, "binary" if logits.shape[1] == 1 else "multilabel")
    if masks.shape != logits.shape:
        raise ValueError(
            f"masks of shape {tuple(masks.shape)} do not fit logits of shape {tuple(logits.shape)}: a sigmoid "
            "task's masks are (N, H, W) for one class, (N, C, H, W) for C"
        )
    valid = masks != ignore_index
    return logits.float(), (masks == 1).float(), valid


def bce_sum(
    logits: torch.Tensor,
    masks: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
) -> torch.Tensor:
    """Return the binary cross-entropy with logits summed over labelled pixel-class pairs:
    -[w_c g log s(x) + (1 - g) log(1 - s(x))], w_c the class's pos_weight (PyTorch's definition)."""
    x, g, valid = _sigmoid_targets(logits, masks, ignore_index)
    pw = None if pos_weight is None else pos_weight.to(x).view(1, -1, 1, 1)
    loss = F.binary_cross_entropy_with_logits(x, g, pos_weight=pw, reduction="none")
    return (loss * valid).sum()


def sigmoid_focal_sum(
    logits: torch.Tensor,
    masks: torch.Tensor,
    pos_weight: torch.Tensor | None = None,
    ignore_index: int = VOID,
    gamma: float = 2.0,
) -> torch.Tensor:
    """Return the sigmoid focal loss (Lin et al. 2017, torchvision.ops.sigmoid_focal_loss without
    alpha) summed over labelled pixel-class pairs, positives weighted by their class's pos_weight."""
    from torchvision.ops import sigmoid_focal_loss

    x, g, valid = _sigmoid_targets(logits, masks, ignore_index)
    loss = sigmoid_focal_loss(x, g, alpha=-1, gamma=gamma, reduction="none")
    if pos_weight is not None:
        loss = loss * (1.0 + g * (pos_weight.to(x).view(1, -1, 1, 1) - 1.0))
    return (loss * valid).sum()


def sigmoid_dice_loss(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = VOID, smooth: float = DICE_SMOOTH
) -> torch.Tensor:
    """Return the soft Dice loss of a micro-batch on the sigmoids: per class, 1 - (2 sum p g + s) /
    (sum p + sum g + s) over its labelled pixels, averaged over the classes present in its labels
    (as dice_loss; segmentation_models_pytorch's DiceLoss in binary/multilabel mode also leaves the
    absent ones out)."""
    x, g, valid = _sigmoid_targets(logits, masks, ignore_index)
    p = torch.sigmoid(x) * valid
    g = g * valid
    dims = (0, 2, 3)
    dice = (2.0 * (p * g).sum(dims) + smooth) / (p.sum(dims) + g.sum(dims) + smooth)
    return _class_mean(1.0 - dice, g.sum(dims) > 0, None) + 0.0 * p.sum()


def lovasz_hinge(logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = VOID) -> torch.Tensor:
    """Return the Lovasz hinge of a micro-batch (Berman et al. 2018, the reference's lovasz_hinge with
    per_image=False): per class, the Lovasz extension of the Jaccard loss applied to the hinge errors
    relu(1 - x * (2g - 1)) of all its labelled pixels, averaged over the classes."""
    x, g, valid = _sigmoid_targets(logits, masks, ignore_index)
    losses = []
    for c in range(x.shape[1]):
        here = valid[:, c]
        xc, gc = x[:, c][here], g[:, c][here]
        if xc.numel() == 0:
            losses.append(x.new_zeros(()))
            continue
        errors = 1.0 - xc * (2.0 * gc - 1.0)
        order = torch.argsort(errors.detach(), descending=True)
        losses.append(torch.dot(F.relu(errors[order]), _lovasz_grad(gc[order])))
    return torch.stack(losses).mean() + 0.0 * x.sum()


@dataclass(frozen=True)
class SigmoidLoss:
    """loss.terms of a sigmoid task (data.task binary or multilabel), split as SegmentationLoss is:
    pixel_sum() (bce, focal: sums over labelled pixel-class pairs, normalised over the whole step by
    labelled()) and batch_mean() (dice, lovasz: means over one micro-batch)."""

    terms: tuple[tuple[str, float], ...] = (("bce", 1.0),)
    pos_weight: torch.Tensor | None = None
    ignore_index: int = VOID
    focal_gamma: float = 2.0

    def __post_init__(self) -> None:
        for name, _ in self.terms:
            if name not in ("bce", "focal", "dice", "lovasz"):
                raise ValueError(
                    f"loss term '{name}' is not one of bce, focal, dice, lovasz for a sigmoid task"
                )

    def term(self, name: str, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """Return one term's value on a micro-batch (a pixel sum or a micro-batch mean)."""
        if name == "bce":
            return bce_sum(logits, masks, self.pos_weight, self.ignore_index)
        if name == "focal":
            return sigmoid_focal_sum(logits, masks, self.pos_weight, self.ignore_index, self.focal_gamma)
        if name == "dice":
            return sigmoid_dice_loss(logits, masks, self.ignore_index)
        return lovasz_hinge(logits, masks, self.ignore_index)

    def _weighted(
        self, names: tuple[str, ...], logits: torch.Tensor, masks: torch.Tensor
    ) -> torch.Tensor | None:
        total = None
        for name, factor in self.terms:
            if name in names:
                value = factor * self.term(name, logits, masks)
                total = value if total is None else total + value
        return total

    def pixel_sum(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the weighted sum of the bce/focal terms over the labelled pixel-class pairs, or None."""
        return self._weighted(("bce", "focal"), logits, masks)

    def batch_mean(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the weighted sum of the dice/lovasz terms of this micro-batch, or None."""
        return self._weighted(("dice", "lovasz"), logits, masks)

    def labelled(self, masks: torch.Tensor) -> torch.Tensor:
        """Return the number of labelled pixel-class pairs of masks: the normaliser's part (the mean
        of PyTorch's binary_cross_entropy_with_logits divides by it too)."""
        return (masks != self.ignore_index).sum().float()


@dataclass
class TwoHeadLoss:
    """SIFT Flow's loss (siftflow-fcn*s/net.py): the semantic head's loss plus the geometric head's
    (loss + loss_geo, both SoftmaxWithLoss with weight 1), each on its own channels of the logits
    (num_classes semantic, then the geometric ones) and its own mask (masks N x 2 x H x W)."""

    loss: SegmentationLoss
    num_classes: int

    def _split(self, logits: torch.Tensor, masks: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n = self.num_classes
        return [(logits[:, :n], masks[:, 0]), (logits[:, n:], masks[:, 1])]

    def _sum(self, part: str, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        values = [getattr(self.loss, part)(x, y) for x, y in self._split(logits, masks)]
        return None if values[0] is None else values[0] + values[1]

    def pixel_sum(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the two heads' ce/focal pixel sums, added."""
        return self._sum("pixel_sum", logits, masks)

    def batch_mean(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the two heads' ohem/dice/lovasz terms, added."""
        return self._sum("batch_mean", logits, masks)

    def labelled(self, masks: torch.Tensor) -> torch.Tensor:
        """Return the labelled pixels of both heads' masks."""
        return self.loss.labelled(masks[:, 0]) + self.loss.labelled(masks[:, 1])


@dataclass
class AuxHeadLoss:
    """torchvision's FCN with its auxiliary head (references/segmentation/train.py criterion):
    loss(out) + aux_weight * loss(aux) on the same mask, the logits being out's num_classes
    channels then aux's (fcn.models.torchvision_fcn in training mode). Normalised pixel sums share
    the labelled pixels, so with ce this is torchvision's mean CE of out + 0.5 * mean CE of aux."""

    loss: SegmentationLoss | SigmoidLoss
    num_classes: int
    aux_weight: float

    def _sum(self, part: str, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        n = self.num_classes
        if logits.shape[1] == n:  # eval mode: the main head only
            return getattr(self.loss, part)(logits, masks)
        main = getattr(self.loss, part)(logits[:, :n], masks)
        return (
            None if main is None else main + self.aux_weight * getattr(self.loss, part)(logits[:, n:], masks)
        )

    def pixel_sum(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the ce/focal pixel sums of the main head plus aux_weight times the auxiliary's."""
        return self._sum("pixel_sum", logits, masks)

    def batch_mean(self, logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor | None:
        """Return the ohem/dice/lovasz terms of the main head plus aux_weight times the auxiliary's."""
        return self._sum("batch_mean", logits, masks)

    def labelled(self, masks: torch.Tensor) -> torch.Tensor:
        """Return the labelled pixels of masks (both heads score the same ones)."""
        return self.loss.labelled(masks)


def build_loss(
    loss_cfg: Any,
    ignore_index: int = VOID,
    weight: torch.Tensor | None = None,
    num_classes: int = 0,
    geometric_classes: int = 0,
    aux_weight: float = 0.0,
    task: str = "multiclass",
) -> SegmentationLoss | TwoHeadLoss | SigmoidLoss | AuxHeadLoss:
    """Return the SegmentationLoss of cfg.loss with the run's ignore index and class weights (a tensor
    on the logits' device, or None); with geometric_classes > 0, the TwoHeadLoss of it for a model
    whose first num_classes channels are the semantic head's; for a sigmoid task (data.task binary
    or multilabel) the SigmoidLoss, `weight` being the positives' pos_weight; with aux_weight > 0,
    the AuxHeadLoss of either (model.arch=torchvision_fcn's auxiliary head)."""
    if task in SIGMOID_TASKS:
        sigmoid = SigmoidLoss(
            terms=tuple((str(t.name), float(t.weight)) for t in loss_cfg.terms),
            pos_weight=weight,
            ignore_index=int(ignore_index),
            focal_gamma=float(loss_cfg.focal_gamma),
        )
        return AuxHeadLoss(sigmoid, num_classes, float(aux_weight)) if aux_weight > 0 else sigmoid
    if geometric_classes:
        return TwoHeadLoss(build_loss(loss_cfg, ignore_index, weight), num_classes)
    if aux_weight > 0:
        return AuxHeadLoss(build_loss(loss_cfg, ignore_index, weight), num_classes, float(aux_weight))
    return SegmentationLoss(
        terms=tuple((str(t.name), float(t.weight)) for t in loss_cfg.terms),
        weight=weight,
        ignore_index=int(ignore_index),
        label_smoothing=float(loss_cfg.label_smoothing),
        focal_gamma=float(loss_cfg.focal_gamma),
        ohem_keep=float(loss_cfg.ohem_keep),
    )
